"""int8 weight-only quantisation: every matrix that decoding streams (the blocks' and lm_head) becomes
int8 with one fp32 scale per output row, a quarter of fp32's bytes; embeddings stay as they are (a step
reads only one row of them) and so do the tiny gates.

Activations keep the model's dtype. On CPU the compiled kernel multiplies the int8 rows by int16-quantised
activations for any number of rows (linear.py), so the only error is the weights' rounding; without the
kernels (other devices, training) the matrix is dequantised for F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .linear import Linear, kernel_for, run_kernel
from .model import GPT


class Int8Linear(Linear):
    def __init__(self, weight: torch.Tensor):
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        del self.weight
        self.register_buffer("weight", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)  # fp32 (a model cast to bf16 afterwards casts it too: see forward)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.weight.float() * self.scale[:, None]).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = kernel_for(x, self.weight)
        if kernel is None:
            return F.linear(x, self.dequantized(x.dtype))
        return run_kernel(kernel, x, self.weight, self.scale.float())


@torch.no_grad()
def quantize_int8(model: GPT) -> GPT:
    """Replace the model's large matrices by int8 ones, in place (inference only)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is Linear and child.weight.shape[1] >= 64:  # tiny gates stay as they are
                setattr(module, name, Int8Linear(child.weight).to(child.weight.device))
    return model
