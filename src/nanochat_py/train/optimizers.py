"""Muon for the transformer's matrices, AdamW for embeddings, unembedding and scalars (both from torch.optim).

Learning rates follow nanochat: AdamW rates are given for a 768-wide model and scaled by 1/sqrt(width/768);
every group keeps its base rate in `initial_lr` so the schedule can scale all of them by one factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import GPT


@dataclass
class LearningRates:
    matrix: float = 0.02  # Muon
    embedding: float = 0.3  # AdamW, wte and value embeddings
    unembedding: float = 0.004  # AdamW, lm_head
    scalar: float = 0.5  # AdamW, per-layer lambdas and gates
    weight_decay: float = 0.0  # Muon's decoupled weight decay

    def scaled(self, factor: float) -> LearningRates:
        return LearningRates(self.matrix * factor, self.embedding * factor, self.unembedding * factor,
                             self.scalar * factor, self.weight_decay)  # fmt: skip


def parameter_groups(model: GPT) -> dict[str, list[torch.nn.Parameter]]:
    """Split parameters by role. Muon only takes 2-D matrices inside the blocks."""
    groups: dict[str, list] = {"matrix": [], "embedding": [], "unembedding": [], "scalar": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("transformer.h.") and p.ndim == 2 and "ve_gate" not in name:
            groups["matrix"].append(p)
        elif name == "transformer.wte.weight" or name.startswith("value_embeds."):
            groups["embedding"].append(p)
        elif name == "lm_head.weight":
            groups["unembedding"].append(p)
        else:
            groups["scalar"].append(p)
    return groups


def build_optimizers(model: GPT, lr: LearningRates) -> list[torch.optim.Optimizer]:
    groups = parameter_groups(model)
    width_scale = (model.config.n_embd / 768) ** -0.5
    adam_groups = [
        {"params": groups["embedding"], "lr": lr.embedding * width_scale},
        {"params": groups["unembedding"], "lr": lr.unembedding * width_scale},
        {"params": groups["scalar"], "lr": lr.scalar},
    ]
    adam_groups = [g for g in adam_groups if g["params"]]
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    ]
    if groups["matrix"]:
        optimizers.append(torch.optim.Muon(groups["matrix"], lr=lr.matrix, momentum=0.95, weight_decay=lr.weight_decay))
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def set_lr_factor(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor


def lr_factor(step: int, total: int, warmup: int, warmdown_ratio: float, final: float = 0.0) -> float:
    """Linear warmup, flat, then a linear warmdown over the last `warmdown_ratio` of the run to `final`."""
    if step < warmup:
        return (step + 1) / warmup
    warmdown = max(1, round(total * warmdown_ratio))
    if step < total - warmdown:
        return 1.0
    progress = (total - step) / warmdown
    return progress + (1 - progress) * final
