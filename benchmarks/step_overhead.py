"""The fixed cost of a decode step: everything but the arithmetic, on a model too small to have any.

A 12-layer G0 model, 128 wide, 1,024-token vocabulary: its products and attention take microseconds, so a
step's time is Python, op dispatch, thread hand-offs and allocations, which a d12 step pays as well (12
layers). Per dtype, the best of 5 runs of 200 greedy steps after a 16-token prompt (`bench.decode_seconds`).

    .venv/bin/python benchmarks/step_overhead.py [--dtype fp32,bf16,int8,int4] [--layers 12]
"""

from __future__ import annotations

import argparse

import torch

from nanochat_py import bench
from nanochat_py.config import config_for
from nanochat_py.model import GPT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="fp32,bf16,int8,int4")
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = config_for("G0", vocab_size=1024, n_layer=args.layers, n_embd=128, n_head=1, n_kv_head=1)
    base = GPT(config).eval().requires_grad_(False)
    with torch.inference_mode():
        for dtype in args.dtype.split(","):
            model = bench.variant_of(base, dtype)
            best = min(bench.decode_seconds(model, 1, 200) for _ in range(5))
            print(f"{dtype}: {best * 1e6:.0f} us a step ({args.layers} layers)", flush=True)


if __name__ == "__main__":
    main()
