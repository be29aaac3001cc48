"""The model's linear layers: the compiled decode kernel for a few rows on CPU, oneDNN for many.

Decoding reads every weight once per step for one row of activations per sequence, so its speed is the
rate at which a matrix-vector product streams weights from memory. torch's CPU matrix-vector paths read
about half of what memory allows (benchmarks/README.md); `kernels.linear_rows` streams close to it, for
up to KERNEL_ROWS rows. Prefill is compute-bound instead: for fp32, F.linear goes to MKL, which measured
2.2-2.8x slower than oneDNN's fp32 matmul on an AMD Zen 5 CPU, so inference calls oneDNN directly (the
op torch.compile's CPU backend uses). Training and other devices use F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

KERNEL_ROWS = 8  # beyond this many rows torch's fp32 matrix-matrix product catches up (benchmarks/README.md)
# bf16 without AMX: torch's bf16 product runs on the same dot-product instruction as the kernel, which reads
# each weight once however many rows, so the kernel stays ahead for a while longer (a d12 decode step of 16
# rows 1.10x, a 16-token prefill 1.27x; 32 tokens 0.93x: benchmarks/README.md). With AMX, oneDNN's tiles win
# as soon as there are a few rows.
BF16_KERNEL_ROWS = KERNEL_ROWS if torch.cpu._is_amx_tile_supported() else 16
# torch's CPU bf16 matrix product is fast only on bf16 instructions (AVX512-BF16, AMX). Elsewhere (AVX2: most
# laptops) a bf16 product of many rows runs in fp32 instead, the weight widened exactly for oneDNN's fp32
# product and the result rounded to bf16: on an AVX2-only AMD EPYC, 512 rows x 3072x768 took 121 ms in bf16
# and 18 ms so (benchmarks/README.md, *AVX2*).
BF16_MATMUL = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight)

    def kernel_scale(self) -> torch.Tensor | None:
        """What the kernel multiplies the weights by: nothing here; quantised layers' scales (quantize.py)."""
        return None

    def reset_parameters(self) -> None:
        # built on the meta device, a model is about to receive its weights: drawing random ones there would
        # only cost time (torch's meta random ops import torch._dynamo, about a third of a second)
        if not self.weight.is_meta:
            super().reset_parameters()


def _needs_grad(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)


def kernel_for(x: torch.Tensor, weight: torch.Tensor):
    """The compiled kernels if they should run this product, else None. Quantised weights (int8, and int4
    packed in uint8) take them for any number of rows: dequantising the matrix for torch costs more than the
    kernel, which reads each weight tile once for all the rows."""
    quantized = weight.dtype in (torch.int8, torch.uint8)
    rows = x.numel() // x.shape[-1]
    if (
        x.device.type != "cpu"
        or (rows > (BF16_KERNEL_ROWS if x.dtype == torch.bfloat16 else KERNEL_ROWS) and not quantized)
        or x.shape[-1] % 32
        or not weight.is_contiguous()
        or (not quantized and weight.dtype != x.dtype)
        or x.dtype not in (torch.float32, torch.bfloat16)
        or _needs_grad(x, weight)  # training keeps autograd
    ):
        return None
    return kernels.ops()


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    kernel = kernel_for(x, weight)
    if kernel is not None:
        return run_kernel(kernel, x, weight, None)
    if _ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype and not _needs_grad(x, weight):
        if x.dtype == torch.float32:
            return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
        if x.dtype == torch.bfloat16 and not BF16_MATMUL:
            return torch.ops.mkldnn._linear_pointwise(x.float(), weight.float(), None, "none", [], "").bfloat16()
    return F.linear(x, weight)


def run_kernel(kernel, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T (times a quantised weight's scales) on the compiled kernel, any leading dims."""
    out = kernel.linear_rows(x.reshape(-1, x.shape[-1]), [weight], [scale])[0]
    return out.view(*x.shape[:-1], weight.shape[0])
