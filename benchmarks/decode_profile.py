"""Where a batch-1 decode step's time goes: the compiled kernels against everything else torch does per step.

Issue 12 asks batch-1 decode to read >= 90% of the measured bandwidth and to "find and remove the fixed
per-step work"; this prints torch's profile of decode steps on a random-weight shape, the share of the step
spent inside the kernels, and the plain step time (without the profiler's overhead).

    .venv/bin/python benchmarks/decode_profile.py [--shape d12] [--dtype bf16] [--steps 40]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from nanochat_py.bench import random_published, variant_of

CONTEXT = 256  # tokens already in the cache when the timed steps start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="d12")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    model = variant_of(random_published(args.shape), args.dtype)
    cache = model.new_cache(1, CONTEXT + 3 * args.steps + 16)
    model(torch.randint(0, 1000, (1, CONTEXT)), cache=cache, last_only=True)
    token = torch.tensor([[5]])
    for _ in range(10):
        model(token, cache=cache, last_only=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            model(token, cache=cache, last_only=True)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    total = sum(e.self_cpu_time_total for e in events)
    kernels = sum(e.self_cpu_time_total for e in events if e.key.startswith("nanochat_py_decode"))
    print(f"in the compiled kernels: {kernels / total:.1%} of {total / args.steps / 1e3:.2f} ms a step (profiled)")
    began = time.perf_counter()
    for _ in range(args.steps):
        model(token, cache=cache, last_only=True)
    print(f"step without the profiler: {(time.perf_counter() - began) / args.steps * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
