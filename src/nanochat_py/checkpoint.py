"""Checkpoint files -> (ModelConfig, state dict): read safely, normalise names, detect the generation.

Also writes checkpoints in nanochat's native layout (model_<step>.pt + meta_<step>.json).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import torch

from .config import GENERATIONS, ModelConfig, config_for, short_repr
from .errors import CheckpointError, UnsafeFileError
from .sources import CheckpointFiles

# transformers' names -> nanochat's: NanoChatForCausalLM's (G0), which nanochat-py's own export of later
# generations (hf_export/) uses too, keeping nanochat's names under `model.` for what those generations added
TRANSFORMERS_NAMES = {
    "model.embed_tokens.weight": "transformer.wte.weight",
    "self_attn.q_proj": "attn.c_q",
    "self_attn.k_proj": "attn.c_k",
    "self_attn.v_proj": "attn.c_v",
    "self_attn.o_proj": "attn.c_proj",
    "self_attn.ve_gate": "attn.ve_gate",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_ENGRAM_KEYS = ("bigram_embed.embed.weight", "bigram_lambdas")
_LAYER = re.compile(r"transformer\.h\.(\d{1,9})\.")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pt through torch's weights-only unpickler (never runs code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"cannot read {path} as safetensors: {e}") from None
    try:
        data = _torch_load(path)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"refusing to load {path}: it is not a plain tensor file ({_refusal_reason(e)}). Loading a checkpoint "
            "never runs code from it; re-save the weights as a plain state dict or safetensors."
        ) from None
    except Exception as e:
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(data)


def _torch_load(path: Path):
    """weights_only load, memory-mapped where the file format allows it (zip files since torch 1.6)."""
    import zipfile

    mmap = zipfile.is_zipfile(path)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _refusal_reason(error: Exception) -> str:
    """The line of torch's weights-only error that names what the file asked for (e.g. 'GLOBAL posix.system')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "global" in line]
    return (named or lines or [type(error).__name__])[0]


def read_meta(path: Path | None) -> dict:
    """The meta json (or config.json) as a dict; anything else is one CheckpointError."""
    if path is None:
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise CheckpointError(f"cannot read {path}: {_first_line(e)}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"cannot use {path}: it is not a JSON object (a {type(meta).__name__})")
    return meta


def normalise_keys(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Strip torch.compile's `_orig_mod.` prefix and map transformers names onto nanochat's."""
    out = {}
    for key, tensor in state.items():
        key = key.removeprefix("_orig_mod.")
        if layout == "transformers":
            key = TRANSFORMERS_NAMES.get(key, key)
            key = key.replace("model.layers.", "transformer.h.")
            for theirs, ours in TRANSFORMERS_NAMES.items():
                key = key.replace("." + theirs + ".", "." + ours + ".")
            key = key.removeprefix("model.")  # model.resid_lambdas, model.value_embeds.3.weight, ...
        out[key] = tensor
    return out


def detect_generation(state: dict[str, torch.Tensor], model_config: dict) -> str:
    """Which nanochat generation wrote these tensors (SPEC-nanochat-compat.md, 'Generations')."""
    if any(k in state for k in _ENGRAM_KEYS):
        raise CheckpointError(
            "this checkpoint has bigram_embed/bigram_lambdas tensors: it is the one-day 'engram' variant of "
            "nanochat (commit c88bbf8, reverted the next day), which nanochat-py does not run"
        )
    if "smear_gate.weight" in state:
        return "G5"
    gate = next((t for k, t in state.items() if k.endswith("attn.ve_gate.weight")), None)
    if gate is not None:
        if gate.dim() == 2 and gate.shape[1] == 12:
            return "G4"
        return "G3" if model_config.get("softcap") == 20 else "G2"
    if "resid_lambdas" in state:
        return "G1w" if model_config.get("window_pattern") else "G1"
    return "G0"


def build_config(files: CheckpointFiles, state: dict[str, torch.Tensor], overrides: dict) -> ModelConfig:
    meta = read_meta(files.meta)
    fields = _transformers_fields(meta) if files.layout == "transformers" else meta.get("model_config", {})
    if not isinstance(fields, dict):
        raise CheckpointError(f"model_config in {files.meta} is not a JSON object (a {type(fields).__name__})")
    known = ModelConfig.__dataclass_fields__
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise CheckpointError(f"unknown config override(s) {', '.join(unknown)}; valid names: {', '.join(known)}")
    fields = {k: v for k, v in fields.items() if k in known} | overrides
    generation = fields.pop("generation", None) or detect_generation(state, fields)
    if generation not in GENERATIONS:
        raise CheckpointError(f"unknown generation {short_repr(generation)}; expected one of {', '.join(GENERATIONS)}")
    wte = state.get("transformer.wte.weight")
    c_fc = state.get("transformer.h.0.mlp.c_fc.weight")
    if wte is not None:
        fields.setdefault("padded_vocab_size", wte.shape[0])
    if c_fc is not None:
        fields.setdefault("mlp_hidden", c_fc.shape[0])
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "sequence_len") if k not in fields]
    if missing:
        where = files.meta or f"a meta_<step>.json beside {files.weights[0]}"
        raise CheckpointError(
            f"the model config lacks {', '.join(missing)}: add them to {where} or pass them as overrides"
        )
    try:
        config = config_for(generation, **fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"bad model config in {files.meta or 'the overrides'}: {e}") from None
    check_config_fits(config, state, ", ".join(str(p) for p in files.weights))
    return config


def check_config_fits(config: ModelConfig, state: dict[str, torch.Tensor], where: str) -> None:
    """Compare the config's sizes with the tensors before any module is built from it: a crafted meta
    (n_layer 200000) must be refused at once, not after building 200000 blocks to find the mismatch."""
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    problems = []
    if config.n_layer > len(layers) or (layers == set(range(len(layers))) and config.n_layer != len(layers)):
        problems.append(f"n_layer is {config.n_layer} but the weights have {len(layers)} layers")
    sizes = [("transformer.wte.weight", ("padded_vocab_size", "n_embd")), ("transformer.h.0.mlp.c_fc.weight",
             ("mlp_hidden", "n_embd"))]  # fmt: skip
    for key, names in sizes:
        tensor = state.get(key)
        if tensor is None or tensor.dim() != len(names):
            continue  # named by check_state_dict, which runs next
        for name, size in zip(names, tensor.shape, strict=True):
            if getattr(config, name) != size:
                problems.append(f"{name} is {getattr(config, name)} but {key} is {tuple(tensor.shape)}")
    if problems:
        _mismatch(where, sorted(set(problems)))


def _transformers_fields(config: dict) -> dict:
    """ModelConfig fields from a config.json: transformers' own NanoChat (G0), or nanochat-py's export of any
    generation (model_type nanochat_gpt, hf_export/configuration_nanochat_gpt.py)."""
    model_type = config.get("model_type")
    if model_type not in (None, "nanochat", "nanochat_gpt"):
        raise CheckpointError(f"config.json describes a {model_type!r} model, not nanochat")
    rope = config.get("rope_parameters")
    rope = rope if isinstance(rope, dict) else {}
    fields = {
        "generation": "G0",
        "vocab_size": config.get("vocab_size"),
        "n_layer": config.get("num_hidden_layers"),
        "n_head": config.get("num_attention_heads"),
        "n_kv_head": config.get("num_key_value_heads") or config.get("num_attention_heads"),
        "n_embd": config.get("hidden_size"),
        "mlp_hidden": config.get("intermediate_size"),
        "sequence_len": config.get("max_position_embeddings"),
        "rope_base": rope.get("rope_theta", config.get("rope_theta", 10000.0)),
        "softcap": config.get("final_logit_softcapping"),
        "norm_eps": config.get("rms_norm_eps", 1e-6),
    }
    if model_type == "nanochat_gpt":
        fields |= _exported_generation_fields(config)
    return {k: v for k, v in fields.items() if v is not None or k == "softcap"}


def _exported_generation_fields(config: dict) -> dict:
    """The architecture switches nanochat-py's transformers export writes (None where absent: the defaults)."""
    window = config.get("sliding_window")  # keys an 'S' layer sees including itself: nanochat's window + 1
    return {
        "generation": config.get("nanochat_generation"),
        "norm_eps": config.get("rms_norm_eps"),  # null: the dtype's machine epsilon, nanochat's own norm
        "qk_scale": config.get("qk_scale"),
        "resid_lambdas": config.get("use_resid_lambdas"),
        "window_pattern": config.get("window_pattern"),
        "short_window": window - 1 if isinstance(window, int) and not isinstance(window, bool) else window,
        "value_embeds": config.get("use_value_embeds"),
        "ve_gate_scale": config.get("ve_gate_scale"),
        "ve_gate_channels": config.get("ve_gate_channels"),
        "smear": config.get("use_smear"),
        "smear_channels": config.get("smear_channels"),
        "backout": config.get("use_backout"),
    }


def check_state_dict(expected: dict[str, torch.Size], state: dict[str, torch.Tensor], where: str) -> None:
    """Raise one error naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k])
    )
    problems = [
        f"{kind} tensors: {_some(names)}"
        for kind, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if names
    ]
    if problems:
        _mismatch(where, problems)


def _mismatch(where: str, problems: list[str]) -> None:
    raise CheckpointError(
        f"{where} does not match the model its config describes; "
        + "; ".join(problems)
        + ". Check that the meta/config file belongs to these weights, or override the config fields."
    )


def _some(names: list[str], shown: int = 5) -> str:
    """The first few names and how many more: a bad file can have thousands, the message stays one line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(n if len(n) <= 120 else n[:117] + "..." for n in names[:shown]) + more


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return short_repr(text[0], 200) if text else type(error).__name__


def save_checkpoint(
    model,
    directory: str | Path,
    step: int = 0,
    extra_meta: dict | None = None,
    *,
    fmt: str = "pt",
    dtype: torch.dtype | None = None,
    tokenizer=None,
) -> Path:
    """Write model_<step>.pt (or .safetensors) + meta_<step>.json: nanochat's layout, with every architecture
    field in the meta. `dtype` (e.g. torch.bfloat16) converts floating-point weights on the way out.

    The tokenizer (`tokenizer`, else the one a loaded Chatbot's model carries) goes beside them as
    tokenizer.pkl + token_bytes.pt, so the directory loads by itself. Each file is written under a
    temporary name and moved into place, readable by others as any new file (0644 under umask 022)."""
    if fmt not in ("pt", "safetensors"):
        raise ValueError(f"unknown checkpoint format {fmt!r}; use pt or safetensors")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        state[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    path = directory / f"model_{step:06d}.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        write_atomically(path, lambda tmp: save_file(state, tmp))
    else:
        write_atomically(path, lambda tmp: torch.save(state, tmp))
    meta = {"step": step, "model_config": model.config.to_dict(), **(extra_meta or {})}
    write_atomically(directory / f"meta_{step:06d}.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is not None:
        from .train.tokenizer_training import save_tokenizer

        save_tokenizer(tokenizer, directory)
    return path


def write_atomically(path: Path, write) -> None:
    """`write(tmp)` a temporary file beside `path`, then move it in: an interrupted save leaves no half file.
    The file gets the mode any new file gets (some writers, such as safetensors', create theirs 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask can only set it)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask
