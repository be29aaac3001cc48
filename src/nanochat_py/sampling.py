"""Choosing the next token from logits: greedy, temperature, top-k, top-p.

With top_p = 1 the random draws are the reference's exactly (top-k: softmax over the k best, one
multinomial draw), so the same seed gives nanochat's own samples. Every accepted value is defined: a
temperature too small to divide by (the scaled logits overflow) is greedy, and top-p always keeps the
most likely token however small top_p is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_next(
    logits: torch.Tensor,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    if top_k and top_k > 0:
        values, indices = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)
    elif top_p < 1:
        values, indices = torch.sort(logits, dim=-1, descending=True)
    else:
        values, indices = logits, None
    probs = F.softmax(_scaled(values, temperature), dim=-1)
    if top_p < 1:
        # drop the tail once the tokens before it already cover top_p of the mass; the first always stays
        # (a top_p below float32's smallest number compares as 0 and would drop it too)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return choice[:, 0] if indices is None else indices.gather(1, choice)[:, 0]


def _scaled(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """values / temperature; a row where that overflows (or the temperature rounds to 0) becomes greedy: 0 at
    its argmax, -inf elsewhere. Overflow means the gap to the runner-up is astronomically many temperatures
    wide, so greedy is what sampling would give anyway."""
    scaled = values / temperature
    broken = (scaled.isnan() | scaled.isposinf()).any(dim=-1, keepdim=True)
    if not broken.any():
        return scaled
    best = values.argmax(dim=-1, keepdim=True)
    greedy = torch.full_like(values, float("-inf")).scatter(-1, best, 0.0)
    return torch.where(broken, greedy, scaled)
