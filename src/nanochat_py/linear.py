"""The model's linear layers, with the fastest CPU path for decoding.

Decoding reads every weight once per step, so its speed is the rate at which a matrix-vector product
streams weights from memory. On CPU, F.linear with only a few rows is slow: measured on 2 Sapphire
Rapids cores with a 65536x768 matrix, bf16 F.linear reads 26 GB/s where torch.mv reads 43 GB/s (one row)
and `W @ x.T` 42 GB/s (8 rows); fp32 with 8 rows reads 9 GB/s where `W @ x.T` reads 14 GB/s. Those
cases take the faster call; everything else (one fp32 row, prefill, training, CUDA) is plain F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEW_ROWS = 32  # up to this many rows (a decode step of a batch) the transposed product wins on CPU


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if (
        x.device.type == "cpu"
        and rows <= FEW_ROWS
        and (weight.dtype == torch.bfloat16 or rows > 1)
        and not (torch.is_grad_enabled() and weight.requires_grad)  # training keeps the plain path
    ):
        if rows == 1:
            return torch.mv(weight, x.reshape(-1)).reshape(*x.shape[:-1], weight.shape[0])
        out = weight @ x.reshape(rows, x.shape[-1]).T
        return out.T.reshape(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight)
