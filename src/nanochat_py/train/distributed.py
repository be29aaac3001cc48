"""Several processes under torchrun (gloo on CPU, NCCL on CUDA): each reads its own rows of every batch and
gradients are averaged once per step, as DDP does. One process needs none of it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The average of `value` over all processes (every process gets it)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(values)
        return values

    def average_gradients(self, model: torch.nn.Module) -> None:
        """Make every process's gradients the mean over all processes (data parallelism, as DDP does)."""
        if self.world == 1:
            return
        for p in model.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start(device: str = "auto") -> Processes:
    """Join torchrun's process group when launched by it (RANK/WORLD_SIZE set); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if device not in ("auto", "cuda"):
        chosen = torch.device(device)
    elif use_cuda:
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    elif torch.backends.mps.is_available() and world == 1:
        chosen = torch.device("mps")
    else:
        chosen = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        if chosen.type == "cpu":  # share the cores instead of every process grabbing all of them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return Processes(rank, world, chosen)


def stop(procs: Processes) -> None:
    if procs.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
