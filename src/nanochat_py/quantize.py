"""Weight-only quantisation for CPU inference: every matrix that decoding streams (the blocks' and lm_head)
is stored in fewer bits; embeddings stay as they are (a step reads only one row of them) and so do the tiny
gates. Activations keep the model's dtype.

- int8: one fp32 scale per output row, a quarter of fp32's bytes. The compiled kernel multiplies the int8
  rows by int16-quantised activations (linear.py), so the only error is the weights' rounding.
- int4: 4.5 bits a weight, llama.cpp's Q4_0 budget: each run of 32 inputs of a row has one fp16 scale, and
  its weights are the nearest of -8..7 times it, the largest one exactly -8 times it. The kernel multiplies
  them by activations quantised to int8 in the same runs of 32 (llama.cpp's q8_0), eight rows at a time
  (pack_int4 interleaves them). A matrix whose input width is not a multiple of 32, or whose row count is not
  a multiple of 8, gets int8 instead.

Both keep the KV cache in bf16, not in the fp32 activations (model.kv_dtype). Prefill (more rows than a
layer's `matmul_rows`) dequantises each matrix for one matrix-matrix product, in bf16 on CPUs with bf16
instructions (BF16_MATMUL); without them int4 stays on its kernel however many rows (it is faster there).

Without the kernels (other devices, training) a matrix is dequantised for F.linear.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .linear import BF16_MATMUL, Linear, kernel_for, linear, run_kernel
from .model import GPT

INT4_GROUP = 32  # inputs per scale; as llama.cpp's Q4_0, byte t of a row's group holds input t and 16 + t
INT4_ROWS = 8  # rows interleaved by pack_int4: the kernel sums eight rows side by side in one vector


class QuantizedLinear(Linear):
    """A weight stored in fewer bits (`weight`, `scale`); subclasses say how to quantise and dequantise."""

    # beyond this many rows (prefill) the matrix is dequantised for one matrix-matrix product, where that is
    # faster than the row kernel's passes of 8 rows over weight tiles (math.inf: never)
    matmul_rows: float

    def __init__(self, weight: torch.Tensor, stored: torch.Tensor, scale: torch.Tensor):
        """`weight` is the float matrix being replaced; `stored` and `scale` are what it becomes."""
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        del self.weight
        self.register_buffer("weight", stored)
        self.register_buffer("scale", scale)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = kernel_for(x, self.weight)
        if kernel is None:
            return F.linear(x, self.dequantized(x.dtype))
        if x.numel() // x.shape[-1] > self.matmul_rows:
            # in bf16 where the CPU has bf16 instructions, the dtype nanochat trains in: the matrix dequantised
            # to bf16, x rounded to bf16, fp32 sums rounded to bf16; the activations between products stay
            # fp32. An AMX Xeon's d12 512-token prefill took 0.19 s (int8) and 0.20 s (int4) so, 0.43 and 0.44
            # in fp32, with the largest logit difference from the fp32 model 0.113 against 0.105 (int8).
            dtype = torch.bfloat16 if BF16_MATMUL else x.dtype
            return linear(x.to(dtype), kernel.dequantize(self.weight, self.kernel_scale(), dtype)).to(x.dtype)
        return run_kernel(kernel, x, self.weight, self.kernel_scale())


class Int8Linear(QuantizedLinear):
    # a d12 MLP matrix on an AMX Xeon, in the kernel against dequantised to bf16: 64 rows 0.88 vs 1.17 ms,
    # 96 rows 1.37 vs 1.08, 256 rows 3.5 vs 1.5. Without bf16 instructions, dequantised to fp32: on an
    # AVX2-only AMD EPYC a 512-token prefill took 0.86 s (d12) and 3.45 s (d20) against the kernel's 0.96
    # and 4.10; a 3072x768 matrix at 32 rows 1.5 ms against 1.2, at 128 rows 4.5 against 5.0.
    matmul_rows = 80 if BF16_MATMUL else 96

    def __init__(self, weight: torch.Tensor):
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        # the scale is fp32 (a model cast to bf16 afterwards casts it too: kernel_scale)
        super().__init__(weight, (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.weight.float() * self.scale[:, None]).to(dtype)

    def kernel_scale(self) -> torch.Tensor:
        return self.scale.float()


class Int4Linear(QuantizedLinear):
    # a d12 MLP matrix, in the kernel against dequantised to bf16 (AMX Xeon, the kernel of one row at a time)
    # 32 rows 0.75 vs 0.87 ms, 64 rows 1.37 vs 0.92. Without bf16 instructions, dequantised to fp32 for
    # oneDNN loses at every size to the kernel of eight rows at a time: 3072x768 on an AVX2 EPYC, 32 rows 0.53
    # vs 1.58 ms, 512 rows 8.2 vs 15.8; a d20 512-token prefill 1.97 s against 3.56
    matmul_rows = 48 if BF16_MATMUL else math.inf

    def __init__(self, weight: torch.Tensor):
        if not can_pack_int4(weight):
            raise ValueError(f"int4 needs a multiple of {INT4_ROWS} rows and of {INT4_GROUP} inputs, not "
                             f"{tuple(weight.shape)}: use Int8Linear for this matrix")  # fmt: skip
        packed, scale = pack_int4(*quantize_groups(weight.detach().float()))
        # uint8 [out, in / 2]; the fp16 scales held as int16 bits, so casting the model (to bf16, say) leaves them
        super().__init__(weight, packed, scale.view(torch.int16))

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        q, scale = unpack_int4(self.weight, self.scale.view(torch.float16))
        return (q.float() * scale.float().repeat_interleave(INT4_GROUP, dim=1)).to(dtype)

    def kernel_scale(self) -> torch.Tensor:
        return self.scale.view(torch.float16)


def quantize_groups(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q in -8..7 as int8 [out, in], fp16 scale [out, in / 32]): the weight of largest magnitude in each
    group is exactly -8 x scale, the rest round to the nearest step."""
    groups = w.view(w.shape[0], -1, INT4_GROUP)
    extreme = groups.gather(2, groups.abs().argmax(dim=2, keepdim=True)).squeeze(2)
    scale = (extreme / -8).half()
    step = scale.float().unsqueeze(2)
    q = torch.where(step == 0, 0.0, groups / step).round().clamp(-8, 7).to(torch.int8)
    return q.view_as(w), scale


def can_pack_int4(weight: torch.Tensor) -> bool:
    return weight.shape[0] % INT4_ROWS == 0 and weight.shape[1] % INT4_GROUP == 0


def pack_int4(q: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q in -8..7 [out, in], fp16 scale [out, in / 32]) -> the kernel's layout: uint8 [out, in / 2] and the
    scales [out, in / 32], both in blocks of 8 rows. A row's group of 32 is 16 bytes as in Q4_0 (byte t: q[t] + 8
    in its low nibble, q[16 + t] + 8 in its high one); a block's group is its 8 rows' 16 bytes interleaved 4
    at a time (bytes 0-3 of rows 0..7, then bytes 4-7 of rows 0..7, ...), so that a 32-byte vector holds 4
    bytes of each row, one row per int32 lane, and then its 8 scales."""
    out, groups = scale.shape
    u = (q.to(torch.int16) + 8).to(torch.uint8).view(out // INT4_ROWS, INT4_ROWS, groups, 2, INT4_GROUP // 2)
    rows = (u[:, :, :, 0] | (u[:, :, :, 1] << 4)).view(out // INT4_ROWS, INT4_ROWS, groups, 4, 4)
    packed = rows.permute(0, 2, 3, 1, 4).reshape(out, -1)  # block, group, 4-byte run, row, byte
    return packed, scale.view(out // INT4_ROWS, INT4_ROWS, groups).transpose(1, 2).reshape(out, groups)


def unpack_int4(packed: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pack_int4's inverse: (q [out, in], scale [out, in / 32]) in row order."""
    out, groups = scale.shape
    rows = packed.view(out // INT4_ROWS, groups, 4, INT4_ROWS, 4).permute(0, 3, 1, 2, 4)
    rows = rows.reshape(out, groups, INT4_GROUP // 2)
    q = (torch.stack((rows & 0x0F, rows >> 4), dim=2).to(torch.int8) - 8).reshape(out, -1)
    return q, scale.view(out // INT4_ROWS, groups, INT4_ROWS).transpose(1, 2).reshape(out, groups)


QUANTIZED = ("int8", "int4")


@torch.no_grad()
def quantize(model: GPT, dtype: str) -> GPT:
    """Replace the model's large matrices by "int8" or "int4" ones, in place (inference only)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is not Linear or child.weight.shape[1] < 64:  # tiny gates stay as they are
                continue
            int4 = dtype == "int4" and can_pack_int4(child.weight)
            layer = Int4Linear(child.weight) if int4 else Int8Linear(child.weight)
            setattr(module, name, layer.to(child.weight.device))
    # keys and values in bf16 (the dtype nanochat trains in), not in the fp32 activations: attention over a
    # long context reads the whole cache every step, and at 2,000 positions that took longer than the weights
    model.kv_dtype = torch.bfloat16
    return model
