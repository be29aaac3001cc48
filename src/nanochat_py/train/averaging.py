"""`--average`: the checkpoint holds the mean of the weights over the LR warmdown, not the last step's weights.

Averaging the weights a run passes through as its learning rate decays gives a steadier point than any one of
them. Measured on the built-in model's recipe at 7,000 steps: held-out arithmetic 95.4% -> 97.2%, letters the
same 97.8%, bits per byte 1.191 -> 1.183 against the same run's last-step weights; at 6,000 steps the same
accuracy, honesty 90.4% -> 91.3%, bits per byte 1.204 -> 1.198 (README, "The built-in model").

Training itself continues from the raw weights, so a resumed run is the same run: the checkpoint's
optim_<step>.pt keeps them with the mean so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """The running mean of a model's floating-point tensors, over the steps passed to add()."""

    def __init__(self) -> None:
        self.mean: dict[str, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def add(self, model: torch.nn.Module) -> None:
        self.count += 1
        for name, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if name not in self.mean:
                self.mean[name] = value.detach().float().clone()
            else:  # mean += (value - mean) / count: the exact mean, one step at a time
                self.mean[name].lerp_(value.float(), 1.0 / self.count)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Hold the mean in `model` inside the block; yield the raw weights, which come back afterwards (None,
        and nothing swapped, before the warmdown: the model's weights are then the checkpoint's)."""
        if not self.count:
            yield None
            return
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.apply(model)
        try:
            yield raw
        finally:
            model.load_state_dict(raw)

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> None:
        """Put the mean into `model` for good (cast to each tensor's own dtype)."""
        state = model.state_dict()
        for name, mean in self.mean.items():
            state[name].copy_(mean)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.count = dict(state["mean"]), int(state["count"])
