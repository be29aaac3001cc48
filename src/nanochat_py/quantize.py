"""int8 weight-only quantisation: every matrix that decoding streams (the blocks' and lm_head) becomes
int8 with one bf16 scale per output row; embeddings stay as they are (a step reads only a row of them).

A decode step (one row) runs torch's int8 x bf16 kernel, which reads a quarter of fp32's bytes; more
rows (prefill) dequantise the matrix to bf16 first, as the int8 kernel is slow for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear, linear
from .model import GPT


class Int8Linear(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("weight", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)
        if rows == 1 and x.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scale)
        elif x.device.type == "cpu":
            out = linear(flat, self.weight.to(torch.bfloat16) * self.scale[:, None])
        else:
            out = F.linear(flat, self.weight.to(torch.bfloat16)) * self.scale
        return out.to(x.dtype).reshape(*x.shape[:-1], -1)


@torch.no_grad()
def quantize_int8(model: GPT) -> GPT:
    """Turn the model into int8 weights + bf16 activations, in place (inference only)."""
    model.to(torch.bfloat16)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Linear) and child.weight.shape[1] >= 64:  # tiny gates stay bf16
                setattr(module, name, Int8Linear(child.weight))
    return model
