"""The training loop shared by `train base` and `train sft`: gradient accumulation, the LR schedule,
periodic held-out bits-per-byte, checkpoints in nanochat's layout, --resume, and a progress bar.

A checkpoint is model_<step>.pt + meta_<step>.json (loadable by `nanochat_py.load`, like any other) plus
optim_<step>.pt holding the optimizer state, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..checkpoint import read_meta, read_tensors, save_checkpoint
from ..errors import NanochatError
from ..evals.bpb import bits_per_byte
from ..model import GPT
from ..sources import resolve
from ..tokenizer import Tokenizer
from . import precision
from .averaging import WeightAverage
from .data import TokenRows
from .distributed import Processes
from .optimizers import LearningRates, build_optimizers, lr_factor, set_lr_factor
from .tokenizer_training import save_tokenizer


@dataclass
class TrainSettings:
    out_dir: Path
    steps: int
    batch_size: int = 8  # rows per micro-batch, per process
    accum: int = 1  # micro-batches per optimizer step
    lr: LearningRates = field(default_factory=LearningRates)
    warmup: int = 0
    warmdown_ratio: float = 0.2
    final_lr: float = 0.0  # fraction of the peak LR at the end of warmdown
    eval_every: int = 0  # steps between held-out evaluations (0: only at the end)
    eval_rows: int = 64
    save_every: int = 0  # steps between checkpoints (0: only at the end)
    seed: int = 0
    resume: bool = False
    stage: str = "base"
    precision: str = "auto"  # fp32, bf16 (autocast, fp32 master weights), auto: bf16 where native (precision.py)
    compile: bool = False  # torch.compile the forward pass and loss
    average: bool = False  # checkpoints hold the mean of the weights over the warmdown (averaging.py)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def loss_of(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the targets that count (-1 = ignored)."""
    logits = model(inputs)
    counted = (targets >= 0).sum().clamp(min=1)  # a tensor, not a Python int: no sync, no graph break
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="sum") / counted


def train(
    model: GPT,
    tok: Tokenizer,
    train_rows: TokenRows,
    val_rows: TokenRows | None,
    settings: TrainSettings,
    procs: Processes,
    extra_meta: dict | None = None,
) -> Path:
    """Run the loop to settings.steps and return the last checkpoint's path."""
    s = settings
    model.train().requires_grad_(True)
    optimizers = build_optimizers(model, s.lr)
    history: list[dict] = []
    start = 0
    average = WeightAverage() if s.average else None
    averaged_from = s.steps - max(1, round(s.steps * s.warmdown_ratio))  # the first step of the warmdown
    if s.resume:
        start, history = restore_state(model, optimizers, s.out_dir, average)
    if start >= s.steps:
        raise NanochatError(f"{s.out_dir} already holds step {start}; pass a larger --steps to train further")
    s.precision = precision.resolve(s.precision, procs.device)  # recorded in the checkpoint's meta as used
    step_loss = torch.compile(loss_of) if s.compile else loss_of
    tokens_per_step = s.batch_size * train_rows.seq_len * s.accum * procs.world
    bar = tqdm(total=s.steps, initial=start, desc=s.stage, unit="step", disable=not procs.is_main, dynamic_ncols=True)
    for step in range(start, s.steps):
        began = time.perf_counter()
        set_lr_factor(optimizers, lr_factor(step, s.steps, s.warmup, s.warmdown_ratio, s.final_lr))
        total = 0.0
        for micro in range(s.accum):
            inputs, targets = train_rows.batch((step * s.accum + micro) * procs.world + procs.rank, s.batch_size)
            inputs, targets = inputs.to(procs.device), targets.to(procs.device)
            with precision.autocast(s.precision, procs.device):
                loss = step_loss(model, inputs, targets) / s.accum
            loss.backward()
            total += loss.item()
        procs.average_gradients(model)  # one all-reduce per step, after all micro-batches
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if average is not None and step >= averaged_from:
            average.add(model)
        loss_value = procs.mean(total)
        seconds = time.perf_counter() - began  # the step alone (held-out evaluation comes after)
        history.append({"step": step + 1, "loss": round(loss_value, 6), "tok_s": round(tokens_per_step / seconds)})
        done = step + 1
        if val_rows is not None and (done == s.steps or (s.eval_every and done % s.eval_every == 0)):
            # the last evaluation scores the weights the checkpoint will hold
            last_weights = average.applied(model) if average is not None and done == s.steps else nullcontext()
            with last_weights, precision.autocast(s.precision, procs.device):
                bpb = bits_per_byte(model, tok, val_rows, s.batch_size, s.eval_rows, procs)
            history.append({"step": done, "val_bpb": round(bpb, 6)})
            if procs.is_main:
                bar.write(f"step {done}: held-out bits per byte {bpb:.4f}")
            model.train()
        bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_step / seconds:,.0f}")
        bar.update(1)
        if done == s.steps or (s.save_every and done % s.save_every == 0):
            path = save_state(model, tok, optimizers, done, history, s, extra_meta, procs, average)
    bar.close()
    if average is not None and average.count:
        average.apply(model)  # the model returned is the one its checkpoint holds
    model.eval().requires_grad_(False)
    return path


def save_state(
    model, tok, optimizers, step, history, s: TrainSettings, extra_meta, procs: Processes, average=None
) -> Path:
    """model_<step>.pt + meta_<step>.json (with the loss history) + optim_<step>.pt, and the tokenizer once.

    With an average, model_<step>.pt holds the mean weights and optim_<step>.pt the raw ones training goes on from."""
    path = s.out_dir / f"model_{step:06d}.pt"
    if procs.is_main:
        meta = {"stage": s.stage, "history": history, "train": s.to_dict(), **(extra_meta or {})}
        state = {"optimizers": [opt.state_dict() for opt in optimizers]}
        if average is None:
            path = save_checkpoint(model, s.out_dir, step, meta)
        else:
            with average.applied(model) as raw:
                path = save_checkpoint(model, s.out_dir, step, {**meta, "averaged_steps": average.count})
            state["average"] = average.state_dict()
            if raw is not None:  # model_<step>.pt holds the mean: keep the weights training goes on from
                state["weights"] = raw
        torch.save(state, s.out_dir / f"optim_{step:06d}.pt")
        if not (s.out_dir / "tokenizer.pkl").is_file():
            save_tokenizer(tok, s.out_dir)
    procs.barrier()
    return path


def latest_step(out_dir: Path) -> int | None:
    steps = [int(m.group(1)) for p in out_dir.glob("optim_*.pt") if (m := re.fullmatch(r"optim_(\d+)\.pt", p.name))]
    return max(steps) if steps else None


def restore_state(model: GPT, optimizers, out_dir: Path, average=None) -> tuple[int, list[dict]]:
    """Load the last checkpoint in out_dir into model, optimizers (and the weight average, if given); return
    (its step, its history)."""
    step = latest_step(out_dir)
    if step is None:
        raise NanochatError(f"--resume: no optim_<step>.pt checkpoint in {out_dir}; run without --resume first")
    device = model.lm_head.weight.device
    saved = torch.load(out_dir / f"optim_{step:06d}.pt", map_location=device, weights_only=True)
    if isinstance(saved, list):  # written before --average existed: the optimizers' states alone
        saved = {"optimizers": saved}
    weights = saved.get("weights") or read_tensors(out_dir / f"model_{step:06d}.pt")
    model.load_state_dict({k: v.to(device) for k, v in weights.items()})
    if average is not None and "average" in saved:
        average.load_state_dict(saved["average"])
    saved = saved["optimizers"]
    if len(saved) != len(optimizers):
        raise NanochatError(f"{out_dir}/optim_{step:06d}.pt does not match this model's optimizers")
    for opt, opt_state in zip(optimizers, saved, strict=True):
        opt.load_state_dict(opt_state)
    meta = json.loads((out_dir / f"meta_{step:06d}.json").read_text())
    return step, list(meta.get("history", []))


def lineage_of(source) -> list[dict]:
    """The stages that produced `source`, each with its history, so a report can plot the whole run."""
    try:
        meta = read_meta(resolve(source).meta)
    except NanochatError:
        return []
    if "stage" not in meta:  # a published or transformers checkpoint: no training history of ours
        return []
    return [*meta.get("lineage", []), {"stage": meta["stage"], "history": meta.get("history", [])}]
