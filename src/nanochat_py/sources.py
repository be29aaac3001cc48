"""Find the files of a checkpoint from whatever the user pointed at.

Accepted sources (see the README): a nanochat base dir, a checkpoint dir inside one, a flat dir as
Hugging Face repos ship them, a single model file, a transformers-format dir, or `hf:owner/repo[@rev]`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

PHASES = ("chatsft", "chatrl", "mid", "base")  # preference when a base dir holds several (chatsft = the chat model)
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"  # the built-in model
_MODEL_FILE = re.compile(r"^model_(.+)\.(pt|safetensors)$")


@dataclass
class CheckpointFiles:
    layout: str  # "native" (nanochat state dict + meta json) or "transformers" (config.json + safetensors)
    weights: list[Path]
    meta: Path | None  # meta_<step>.json (native) or config.json (transformers)
    tokenizer: Path | None


def default_base_dir() -> Path:
    return Path(os.environ.get("NANOCHAT_BASE_DIR", "~/.cache/nanochat")).expanduser()


def pick_model_file(names: list[str], step: int | str | None = None) -> str | None:
    """The model_<step>.{pt,safetensors} to load: the requested step, else the largest numeric step."""
    found = [(m.group(1), n) for n in names if (m := _MODEL_FILE.match(n))]
    if step is not None:
        wanted = [
            n for s, n in found if s == str(step) or (s.isdigit() and str(step).isdigit() and int(s) == int(step))
        ]
        return wanted[0] if wanted else None
    if not found:
        return None
    numeric = [(int(s), n) for s, n in found if s.isdigit()]
    return max(numeric)[1] if numeric else sorted(n for _, n in found)[0]


def meta_name_for(model_name: str) -> str:
    return "meta_" + _MODEL_FILE.match(model_name).group(1) + ".json"


def resolve(source: str | os.PathLike, phase: str | None = None, tag: str | None = None, step=None) -> CheckpointFiles:
    if isinstance(source, str) and source.startswith("hf:"):
        from .hub import download

        return resolve(download(source[3:], step=step), step=step)
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"source {source} does not exist. Pass a nanochat base dir, a checkpoint dir, a model file, "
            "a transformers-format dir, or hf:<owner>/<repo>"
        )
    if path.is_file():
        return _from_model_file(path)
    if (path / "config.json").is_file() and list(path.glob("*.safetensors")):
        return _transformers_dir(path)
    if any(p.is_dir() for p in path.glob("*_checkpoints")):
        return _from_base_dir(path, phase, tag, step)
    names = [p.name for p in path.iterdir()]
    model_name = pick_model_file(names, step)
    if model_name is None:
        wanted = f"model_{step}.pt" if step is not None else "model_<step>.pt or .safetensors"
        raise CheckpointError(
            f"no checkpoint in {path}: expected {wanted} + meta json, a transformers config.json + "
            "*.safetensors, or a nanochat base dir with *_checkpoints/"
        )
    return _from_model_file(path / model_name)


def _from_model_file(model: Path) -> CheckpointFiles:
    if model.suffix not in (".pt", ".safetensors"):
        raise CheckpointError(f"{model} is not a checkpoint: expected a .pt or .safetensors file")
    if model.name == "model.safetensors" and (model.parent / "config.json").is_file():
        return _transformers_dir(model.parent)
    meta = model.parent / meta_name_for(model.name) if _MODEL_FILE.match(model.name) else None
    if meta is None or not meta.is_file():
        metas = sorted(model.parent.glob("meta_*.json"))
        meta = metas[0] if len(metas) == 1 else None
    return CheckpointFiles("native", [model], meta, find_tokenizer(model.parent))


def _transformers_dir(path: Path) -> CheckpointFiles:
    weights = sorted(path.glob("*.safetensors"))
    return CheckpointFiles("transformers", weights, path / "config.json", find_tokenizer(path))


def _from_base_dir(base: Path, phase: str | None, tag: str | None, step) -> CheckpointFiles:
    phases = [phase] if phase else [p for p in PHASES if (base / f"{p}_checkpoints").is_dir()]
    if not phases or not (base / f"{phases[0]}_checkpoints").is_dir():
        raise CheckpointError(f"{base} has no {phase}_checkpoints/ (phases here: {_phases_in(base)})")
    checkpoints = base / f"{phases[0]}_checkpoints"
    tags = [p.name for p in checkpoints.iterdir() if p.is_dir()]
    if tag is None:
        depths = [(int(m.group(1)), t) for t in tags if (m := re.fullmatch(r"d(\d+)", t))]
        tag = max(depths)[1] if depths else (sorted(tags)[-1] if tags else None)
    if tag is None or not (checkpoints / tag).is_dir():
        raise CheckpointError(
            f"no model tag {tag or ''} in {checkpoints} (tags here: {', '.join(sorted(tags)) or 'none'})"
        )
    return resolve(checkpoints / tag, step=step)


def _phases_in(base: Path) -> str:
    return ", ".join(sorted(p.name.removesuffix("_checkpoints") for p in base.glob("*_checkpoints"))) or "none"


def find_tokenizer(checkpoint_dir: Path) -> Path | None:
    """tokenizer.pkl / tokenizer.json beside the weights, in tokenizer/, or in <base>/tokenizer/ of a base dir."""
    for folder in (checkpoint_dir, checkpoint_dir / "tokenizer", checkpoint_dir.parent.parent / "tokenizer"):
        for name in ("tokenizer.pkl", "tokenizer.json"):
            if (folder / name).is_file():
                return folder / name
    return None
