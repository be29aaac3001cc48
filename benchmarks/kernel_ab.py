"""Two builds of the CPU kernels against each other, in one process, taking turns: decode steps of a random
published shape per dtype, best of each build's turns, and the ratio.

The machines here change speed from minute to minute (memory bandwidth 40-80 GB/s, and at times the cores
themselves), so two builds timed in separate runs cannot be compared; loaded side by side and alternated,
they can. Build the other side from an older commit into its own directory first:

    git worktree add /tmp/old <commit>
    NANOCHAT_PY_KERNEL_DIR=/tmp/old-kernels PYTHONPATH=/tmp/old/src .venv/bin/python -m nanochat_py.kernels
    .venv/bin/python -m nanochat_py.kernels                                   # this checkout's build
    .venv/bin/python benchmarks/kernel_ab.py /tmp/old-kernels/*.so .venv/share/nanochat-py/kernels/<name>.so \\
        --shape d12,d20 --dtype fp32,bf16,int8,int4 --batch 1

Both builds must take this checkout's arguments (the Python side is this checkout's).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nanochat_py import bench, kernels

PROMPT = 32  # tokens in the cache before the timed steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="a kernel library (.so): the baseline")
    parser.add_argument("b", type=Path, help="another: the candidate")
    parser.add_argument("--shape", default="d12", help="comma-separated random published shapes")
    parser.add_argument("--dtype", default="fp32,bf16,int8,int4")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=24, help="timed decode steps per turn")
    parser.add_argument("--turns", type=int, default=6, help="turns per build, alternating which goes first")
    args = parser.parse_args()
    builds = {"a": kernels.open_library(args.a), "b": kernels.open_library(args.b)}
    if None in builds.values():
        raise SystemExit("a library did not load (the warning above says why)")
    torch.manual_seed(0)
    with torch.inference_mode():
        for shape in args.shape.split(","):
            base = bench.random_published(shape)
            for dtype in args.dtype.split(","):
                model = bench.variant_of(base, dtype)
                times = {"a": [], "b": []}
                for turn in range(args.turns):
                    for side in ("a", "b") if turn % 2 == 0 else ("b", "a"):
                        kernels._loaded["native"] = builds[side]  # what kernels.ops() hands the model
                        times[side].append(bench.decode_seconds(model, args.batch, args.steps, PROMPT))
                a, b = min(times["a"]), min(times["b"])
                print(f"{shape} {dtype} batch {args.batch}: a {1e3 * a:.2f} ms, b {1e3 * b:.2f} ms a step; "
                      f"b is {a / b:.2f}x a ({args.batch / b:.0f} tok/s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
