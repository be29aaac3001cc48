"""Export any nanochat checkpoint as a Hugging Face transformers directory (`nanochat-py export --format
transformers`), for transformers, vLLM, SGLang, TGI, PEFT, lm-evaluation-harness's `hf` model and the Hub.

A G0 model becomes transformers' own NanoChatForCausalLM (no remote code). Every other generation becomes
`nanochat_gpt`, whose configuration and modelling files (in this package, depending on torch and transformers
only) are copied beside the weights and loaded with `trust_remote_code=True`. Either directory also loads back
into nanochat_py.load.

    model.safetensors        the weights (weights.py)
    config.json              the architecture; generation_config.json: how replies stop (configs.py)
    tokenizer.json           the tokenizer; tokenizer_config.json: special tokens, chat template (tokenizer_files.py)
    configuration_nanochat_gpt.py, modeling_nanochat_gpt.py      G1-G5 (and any G0 transformers cannot express)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from ..checkpoint import write_atomically
from ..errors import NanochatError
from ..tokenizer import SPECIAL_TOKENS
from .configs import REMOTE_FILES, config_json, generation_config_json, runs_on_stock_transformers
from .tokenizer_files import tokenizer_config, tokenizer_json, write_json
from .weights import transformers_state_dict

WRITTEN = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
           *REMOTE_FILES)  # fmt: skip
# files that, left in the directory, would change what transformers or nanochat-py load from it
_CONFLICTING = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth", "tokenizer.pkl",
                "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")  # fmt: skip


def export_transformers(bot, out: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write `bot` (a nanochat_py.load Chatbot) to the directory `out` in transformers' format; returns `out`.
    Re-exporting into the same directory replaces the earlier export; other checkpoints there are refused."""
    out = Path(out)
    _check_directory(out)
    out.mkdir(parents=True, exist_ok=True)
    config, tokenizer = bot.model.config, bot.tokenizer
    missing = [name for name in SPECIAL_TOKENS if name not in tokenizer.encoding._special_tokens]
    if missing:  # the chat template and the stop tokens are written in them
        raise NanochatError(f"the tokenizer lacks nanochat's special tokens {', '.join(missing)}: cannot export it")

    from safetensors.torch import save_file

    state = transformers_state_dict(bot.model, dtype)
    write_atomically(out / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    files = {
        "config.json": config_json(config, tokenizer, dtype),
        "generation_config.json": generation_config_json(tokenizer),
        "tokenizer.json": tokenizer_json(tokenizer),
        "tokenizer_config.json": tokenizer_config(tokenizer, config.sequence_len),
    }
    for name, data in files.items():
        write_atomically(out / name, lambda tmp, data=data: write_json(tmp, data))
    for name in REMOTE_FILES:
        if runs_on_stock_transformers(config):
            (out / name).unlink(missing_ok=True)  # left by an earlier export of another generation
        else:
            source = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
            write_atomically(out / name, lambda tmp, text=source: tmp.write_text(text, encoding="utf-8"))
    return out


def _check_directory(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NanochatError(f"--out {out} is a file, not a directory")
    if not out.is_dir():
        return
    clashes = sorted(
        {p.name for pattern in _CONFLICTING for p in out.glob(pattern) if p.name not in WRITTEN}
        | {p.name for p in out.glob("meta_*.json")}
    )
    if clashes:
        raise NanochatError(
            f"{out} already holds another checkpoint's files ({', '.join(clashes[:5])}), which transformers or "
            "nanochat-py would load beside the export: export into a new or empty directory"
        )
