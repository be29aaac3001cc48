"""Choosing the next token from logits: greedy, temperature, top-k, top-p.

With top_p = 1 the random draws are the reference's exactly (top-k: softmax over the k best, one
multinomial draw), so the same seed gives nanochat's own samples.
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
        probs = F.softmax(logits / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
    probs = F.softmax(values / temperature, dim=-1)
    if top_p < 1:
        # drop the tail once the tokens before it already cover top_p of the mass (the first always stays)
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return indices.gather(1, choice)[:, 0]
