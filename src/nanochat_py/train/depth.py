"""The depth dial: one number picks the whole model, as in nanochat (width = 64 per layer, 128-wide heads).

Also the fresh-model initialisation, since only a model built from the dial starts from random weights.
"""

from __future__ import annotations

import math

import torch

from ..config import ModelConfig, config_for
from ..model import GPT

ASPECT_RATIO = 64  # n_embd per layer of depth
HEAD_DIM = 128


def config_for_depth(depth: int, vocab_size: int, sequence_len: int = 2048, generation: str = "G5") -> ModelConfig:
    """nanochat's dial: n_embd = 64 * depth rounded up to whole 128-wide heads; as many kv heads as heads."""
    if depth < 1:
        raise ValueError(f"--depth must be at least 1, got {depth}")
    n_embd = -(-depth * ASPECT_RATIO // HEAD_DIM) * HEAD_DIM
    n_head = n_embd // HEAD_DIM
    window = "SSSL" if generation == "G5" else None
    fields = {"window_pattern": window} if window else {}
    return config_for(
        generation, n_layer=depth, n_embd=n_embd, n_head=n_head, n_kv_head=n_head,
        vocab_size=vocab_size, sequence_len=sequence_len, **fields,
    )  # fmt: skip


@torch.no_grad()
def init_weights(model: GPT, seed: int = 0) -> None:
    """A fresh model: unit-scale embeddings, uniform matrices, zero output projections (each block starts as
    the identity), a near-zero unembedding, and neutral residual/gate scalars."""
    gen = torch.Generator().manual_seed(seed)
    c = model.config.n_embd
    bound = math.sqrt(3.0) / math.sqrt(c)  # uniform with std 1/sqrt(n_embd)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight") or "ve_gate" in name or "smear_gate" in name:
            p.zero_()
        elif name == "transformer.wte.weight" or name.startswith("value_embeds."):
            p.copy_(torch.randn(p.shape, generator=gen))
        elif name == "lm_head.weight":
            p.copy_(torch.randn(p.shape, generator=gen) * 0.001)
        elif name == "resid_lambdas":
            p.fill_(1.0)
        elif name == "x0_lambdas":
            p.fill_(0.1)
        elif name in ("smear_lambda", "backout_lambda"):
            p.zero_()
        else:
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)


def new_model(config: ModelConfig, seed: int = 0, device: str | torch.device = "cpu") -> GPT:
    model = GPT(config)
    init_weights(model, seed)
    return model.to(device)
