"""nanochat_py.load(): source -> files -> tensors + config -> model on a device -> Chatbot."""

from __future__ import annotations

import os

import torch

from .chatbot import Chatbot
from .checkpoint import build_config, check_state_dict, normalise_keys, read_tensors
from .errors import CheckpointError, NanochatError
from .model import GPT
from .quantize import QUANTIZED, quantize
from .sources import DEFAULT_MODEL_DIR, default_base_dir, resolve
from .tokenizer import Tokenizer, load_tokenizer

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
# nanochat trains and runs in bf16 or fp32; fp16 has a finer mantissa than bf16 but a far smaller range (65504)
FP16 = (
    "fp16 is not supported: nanochat models are trained in bf16, and fp16's smaller range can overflow them; "
    "use bf16 (or fp32; int8 or int4 on CPU)"
)


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise NanochatError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NanochatError("--device cuda was asked for, but this PyTorch build sees no CUDA GPU; use cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NanochatError("--device mps was asked for, but MPS is not available here; use cpu or auto")
    return device


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU and MPS by default (exact, and bf16 files are upcast); bf16 on CUDA. (int8/int4: see `load`.)"""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if dtype in (torch.float32, torch.bfloat16):
        return dtype
    if dtype == torch.float16 or str(dtype).lower() in ("fp16", "float16", "half"):
        raise NanochatError(FP16)
    if not isinstance(dtype, str) or dtype.lower() not in DTYPES:
        raise NanochatError(f"unknown dtype {str(dtype)[:40]!r}; use fp32, bf16, int8 or int4 (CPU)")
    return DTYPES[dtype.lower()]


def load(
    source: str | os.PathLike | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    *,
    phase: str | None = None,
    tag: str | None = None,
    step: int | str | None = None,
    tokenizer: str | os.PathLike | None = None,
    **overrides,
) -> Chatbot:
    """Load any nanochat checkpoint (see the README for the accepted sources) ready to chat.

    dtype "int8" or "int4" quantises every large matrix to int8 or int4 weights (fp32 activations; CPU only:
    quantize.py).
    phase/tag/step pick a checkpoint inside a nanochat base dir; `tokenizer` points at one explicitly;
    any other keyword overrides a ModelConfig field (e.g. softcap=20 for a G3 checkpoint).
    """
    device = pick_device(device)  # bad flags are refused before any file is read
    quantized = dtype.lower() if isinstance(dtype, str) and dtype.lower() in QUANTIZED else None
    if quantized and device.type != "cpu":
        raise NanochatError(f"{quantized} runs on the CPU only (its kernel is a CPU one); on {device.type} use bf16")
    dtype = torch.float32 if quantized else pick_dtype(dtype, device)
    if source is None:
        source = _default_source()
    files = resolve(source, phase=phase, tag=tag, step=step)
    state: dict[str, torch.Tensor] = {}
    for path in files.weights:
        state.update(normalise_keys(read_tensors(path), files.layout))
    config = build_config(files, state, overrides)
    where = ", ".join(str(p) for p in files.weights)
    with torch.device("meta"):
        model = GPT(config)
    check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state, where)
    if quantized:  # quantise from the file's dtype, one matrix at a time: no fp32 copy of the whole model
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True, assign=True)
        del state
        quantize(model.eval().requires_grad_(False), quantized).to(dtype)  # the rest (embeddings) in fp32
    else:
        state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        model.eval().requires_grad_(False)

    tok_path = tokenizer or files.tokenizer
    if tok_path is None:
        raise CheckpointError(f"no tokenizer.pkl or tokenizer.json found for {where}; pass tokenizer=PATH")
    tok = load_tokenizer(tok_path)
    _check_vocab(tok, config.vocab_size, tok_path, where)
    return Chatbot(model, tok, str(source))


def _check_vocab(tok: Tokenizer, vocab_size: int, tok_path, where: str) -> None:
    if tok.vocab_size != vocab_size:
        raise CheckpointError(
            f"tokenizer {tok_path} has {tok.vocab_size} tokens but the model {where} was built for {vocab_size}: "
            "they do not belong together; pass the model's own tokenizer"
        )


def _default_source() -> str:
    """nanochat's own checkpoints in $NANOCHAT_BASE_DIR (~/.cache/nanochat) if any, else the built-in model."""
    base = default_base_dir()
    if any(base.glob("*_checkpoints/*/model_*")):  # an empty *_checkpoints/ (a run that saved nothing) is no model
        return str(base)
    if any(DEFAULT_MODEL_DIR.glob("model_*")):
        return str(DEFAULT_MODEL_DIR)
    raise CheckpointError(
        f"no source given, no nanochat checkpoints in {base} ($NANOCHAT_BASE_DIR) and no built-in model in "
        f"{DEFAULT_MODEL_DIR} (build it with `make model`): pass a source, e.g. hf:karpathy/nanochat-d32"
    )
