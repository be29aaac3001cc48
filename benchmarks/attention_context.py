"""What a long context costs a batch-1 decode step: one block's compiled step at 16 and at 1,024 cached
positions, run over 12 separate KV caches in turn (a d12's layers: more than the L3 cache holds, as in a real
step), so the difference is attention reading its keys and values from memory.

    .venv/bin/python benchmarks/attention_context.py [--shape d12] [--dtype bf16,int8,int4] [--context 1024]

The KV cache is bf16 for every dtype here (int8 and int4 models keep fp32 activations but a bf16 cache).
"""

from __future__ import annotations

import argparse
import time

import torch

from nanochat_py.bench import random_published, variant_of

LAYERS = 12


def layers_at(model, context: int):
    """A function running one block's decode step at `context` cached positions over LAYERS caches in turn."""
    block = model.transformer.h[0]
    caches = [model.new_cache(1, context + 1) for _ in range(LAYERS)]
    for cache in caches:
        cache.k.normal_()
        cache.v.normal_()
    x = torch.randn(1, 1, model.config.n_embd, dtype=model.dtype)
    steps = [model._kernel_step(x, cache, torch.tensor([context])) for cache in caches]
    if steps[0] is None:
        raise SystemExit("the compiled kernels are not available here (see README: make builds them)")

    def all_layers():
        for cache, step in zip(caches, steps, strict=True):
            block._kernel_step(x, None, cache, step)

    return all_layers


def block_times(model, contexts: list[int], rounds: int = 15) -> list[float]:
    """Seconds a block per context: the best of `rounds`, the contexts taking turns (the machine drifts)."""
    runs = [layers_at(model, c) for c in contexts]
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            run()
            start = time.perf_counter()
            for _ in range(5):
                run()
            best[i] = min(best[i], (time.perf_counter() - start) / 5 / LAYERS)
    return best


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="d12")
    parser.add_argument("--dtype", default="bf16,int8,int4")
    parser.add_argument("--context", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = random_published(args.shape)
    cfg = base.config
    print("| dtype | KV dtype | block at 16 | block at", args.context, "| attention | KV read rate |")
    print("|---|---|--:|--:|--:|--:|")
    for dtype in args.dtype.split(","):
        model = variant_of(base, dtype)
        short, long = block_times(model, [16, args.context])
        kv_dtype = model.kv_dtype
        kv_bytes = 2 * cfg.n_kv_head * args.context * (cfg.n_embd // cfg.n_head) * kv_dtype.itemsize
        extra = long - short
        print(f"| {dtype} | {str(kv_dtype).removeprefix('torch.')} | {short * 1e6:.0f} us | {long * 1e6:.0f} us "
              f"| +{extra * 1e6:.0f} us | {kv_bytes / extra / 1e9:.1f} GB/s |")  # fmt: skip


if __name__ == "__main__":
    main()
