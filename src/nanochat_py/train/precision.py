"""Which arithmetic a training run's forward and backward passes use.

bf16 autocast runs the matrix products in bf16 with fp32 sums, while the weights, their gradients and the
optimizer state stay fp32 (the "master weights"): the same recipe nanochat trains with on GPUs. It pays where
the hardware has bf16 units: NVIDIA GPUs, and x86 CPUs with AVX512-BF16 or AMX (where oneDNN's bf16 products
run several times faster than fp32), or Arm CPUs with BF16. Elsewhere bf16 would be emulated and slower, so
`auto` stays fp32 there.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices natively (and so faster than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    if platform.machine() in ("x86_64", "AMD64"):
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return "bf16" in flags  # aarch64 lists its features as words too


def resolve(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the device does bf16 natively, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16" and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
