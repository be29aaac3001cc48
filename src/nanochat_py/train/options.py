"""Command-line options the training stages share."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import real, whole
from .optimizers import LearningRates
from .precision import PRECISIONS
from .trainer import TrainSettings


def add_loop_options(p: argparse.ArgumentParser, steps: int | None, batch_size: int, lr: LearningRates) -> None:
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write (model_<step>.pt ...)")
    p.add_argument("--steps", type=whole(1), default=steps, required=steps is None, help="optimizer steps")
    p.add_argument("--batch-size", type=whole(1), default=batch_size, help=f"rows per micro-batch ({batch_size})")
    p.add_argument("--accum", type=whole(1), default=1, help="micro-batches per optimizer step (gradient accumulation)")
    rate = real(0, 1e3)  # a learning rate, weight decay or ratio is never negative, NaN or infinite
    p.add_argument("--matrix-lr", type=rate, default=lr.matrix, help=f"Muon LR for matrices ({lr.matrix})")
    p.add_argument("--embedding-lr", type=rate, default=lr.embedding, help=f"AdamW LR, embeddings ({lr.embedding})")
    p.add_argument("--unembedding-lr", type=rate, default=lr.unembedding, help=f"AdamW LR, lm_head ({lr.unembedding})")
    p.add_argument("--scalar-lr", type=rate, default=lr.scalar, help=f"AdamW LR, scalars ({lr.scalar})")
    p.add_argument("--weight-decay", type=rate, default=lr.weight_decay, help="Muon weight decay")
    p.add_argument("--warmup", type=whole(0), default=0, help="LR warmup steps (0)")
    p.add_argument("--warmdown-ratio", type=real(0, 1), default=0.2, help="share of steps with a linear LR decay (0.2)")
    p.add_argument("--final-lr", type=real(0, 1), default=0.0, help="LR at the end of warmdown, as a fraction (0)")
    p.add_argument("--eval-every", type=whole(0), default=0, help="held-out bpb every N steps (0: at the end)")
    p.add_argument("--eval-rows", type=whole(1), default=64, help="held-out rows per evaluation (64)")
    p.add_argument("--val-percent", type=real(0, 100), default=2.0, help="percent of the data held out (2)")
    p.add_argument(
        "--average",
        action="store_true",
        help="checkpoints hold the mean of the weights over the warmdown instead of the last step's",
    )
    p.add_argument("--save-every", type=whole(0), default=0, help="checkpoint every N steps (0: at the end)")
    p.add_argument("--seed", type=whole(0), default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (torchrun: one GPU per process)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="bf16: matrix products in bf16 autocast, fp32 weights and optimizer state; auto: bf16 where "
        "the device does bf16 natively (NVIDIA GPUs, CPUs with AVX512-BF16/AMX), else fp32 (auto)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the forward and loss with torch.compile (a minute or so up front; faster steps)",
    )


def settings_from(args: argparse.Namespace, stage: str) -> TrainSettings:
    lr = LearningRates(args.matrix_lr, args.embedding_lr, args.unembedding_lr, args.scalar_lr, args.weight_decay)
    return TrainSettings(
        out_dir=args.out, steps=args.steps, batch_size=args.batch_size, accum=args.accum, lr=lr,
        warmup=args.warmup, warmdown_ratio=args.warmdown_ratio, final_lr=args.final_lr,
        eval_every=args.eval_every, eval_rows=args.eval_rows, save_every=args.save_every,
        seed=args.seed, resume=args.resume, stage=stage, precision=args.precision, compile=args.compile,
        average=args.average,
    )  # fmt: skip
