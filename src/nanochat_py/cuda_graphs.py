"""Decode steps on CUDA as CUDA graphs: each step shape is captured once, then replayed with one launch.

A decode step is hundreds of small kernels (a few per layer for norms, RoPE, attention, residuals); launched
one at a time from Python, the GPU spends most of a step waiting for the CPU. A CUDA graph records the whole
step once and replays it. A replay repeats the exact kernels, shapes and addresses, so:

- the step reads its token ids and positions from buffers owned here, and attends over a fixed span of
  the cache (the next power of two at or above the furthest position, at least MIN_SPAN) with a mask
  saying which keys each row sees: the same per-row decode the eager path runs (`GPT.run`), which also
  writes each row's key and value at its own position;
- a graph belongs to one cache's memory, one batch size and one span; a cache at a new address is a new
  capture (milliseconds), and beyond MAX_GRAPHS the least recently used graph is dropped.

NANOCHAT_PY_CUDA_GRAPHS=0 turns graphs off (plain eager decoding).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .kv_cache import KVCache
    from .model import GPT

MIN_SPAN = 256
MAX_GRAPHS = 32
_enabled = os.environ.get("NANOCHAT_PY_CUDA_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off")


def applies(model: GPT, idx: torch.Tensor, cache: KVCache) -> bool:
    """Whether this forward is a decode step to replay as a graph."""
    return _enabled and idx.is_cuda and not torch.cuda.is_current_stream_capturing() and fits(model, idx, cache)


def fits(model: GPT, idx: torch.Tensor, cache: KVCache) -> bool:
    """Whether a step has the fixed shape graphs replay, on any device."""
    return (
        idx.shape[1] == 1
        and torch.is_inference_mode_enabled()  # graphs hold no autograd state
        and (cache.prev_embedding is not None or not model.config.smear)  # smear needs the previous token
    )


@dataclass
class _Step:
    """One captured step shape: its input and output buffers, and the graph that fills the output."""

    run: Callable[[], torch.Tensor] | None  # the step itself, reading idx and positions (uncaptured only)
    idx: torch.Tensor  # [B, 1] the step's tokens
    positions: torch.Tensor  # [B] each row's position
    graph: torch.cuda.CUDAGraph | None = None  # None: replay runs the step uncaptured (capture=False)
    logits: torch.Tensor | None = None  # [B, 1, vocab] the step's output

    def replay(self) -> None:
        if self.graph is None:
            self.logits = self.run()
        else:
            self.graph.replay()


class GraphedDecode:
    """A model's captured decode steps. `capture=False` runs the very same fixed-shape steps without
    capturing them (the CPU tests check them against ordinary decoding that way)."""

    def __init__(self, model: GPT, capture: bool = True):
        self.model = model
        self.capture = capture
        self.graphs: OrderedDict[tuple, _Step] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.lock = threading.Lock()  # server workers may share one model on one GPU

    def step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decode step of every row of `cache` (not advanced here: GPT.forward does that)."""
        if cache.row_pos is None:  # every row at the shared position
            if cache.pos >= cache.capacity:
                raise ValueError(f"KV cache is full: {cache.pos + 1} positions needed, capacity {cache.capacity}")
            end = cache.pos + 1
        else:
            end = cache.row_end  # GPT.forward's begin_row_step computed and checked it
        span = min(cache.capacity, max(MIN_SPAN, 1 << (end - 1).bit_length()))
        with self.lock:
            entry = self._graph_for(idx, cache, span)
            entry.idx.copy_(idx)
            if cache.row_pos is None:
                entry.positions.fill_(cache.pos)
            else:
                entry.positions.copy_(cache.row_pos)
            entry.replay()
            return entry.logits.clone()  # the buffer is overwritten by the next replay

    def _graph_for(self, idx: torch.Tensor, cache: KVCache, span: int) -> _Step:
        self.model._rope_table_for(cache.capacity)  # never regrown inside a graph
        prev = cache.prev_embedding
        key = (
            idx.shape[0], span, cache.k.data_ptr(), cache.v.data_ptr(), cache.k.shape, cache.k.stride(),
            None if prev is None else (prev.data_ptr(), prev.shape, prev.stride()),
            self.model._rope_table[0].data_ptr(), self.model.transformer.wte.weight.data_ptr(),
        )  # fmt: skip
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(idx, cache, span)
            self.graphs[key] = entry
            while len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        return entry

    def _capture(self, idx: torch.Tensor, cache: KVCache, span: int) -> _Step:
        batch = idx.shape[0]
        static_idx = idx.clone()
        positions = (
            torch.full((batch,), cache.pos, dtype=torch.long, device=idx.device)
            if cache.row_pos is None
            else cache.row_pos.clone()
        )
        view = cache.at(positions, span)
        saved = None if view.prev_embedding is None else view.prev_embedding.clone()

        def run() -> torch.Tensor:
            return self.model.run(static_idx, view, positions, last_only=True)

        step = _Step(run, static_idx, positions)
        if not self.capture:
            return step
        # warm-up runs on a side stream (as CUDA graphs require); they write this step's keys and values,
        # which the replay writes again with the same values, and move the smear state on: put it back
        side = torch.cuda.Stream(device=idx.device)
        side.wait_stream(torch.cuda.current_stream(idx.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                run()
                if saved is not None:
                    view.prev_embedding.copy_(saved)
        torch.cuda.current_stream(idx.device).wait_stream(side)
        step.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(step.graph, pool=self.pool, capture_error_mode="thread_local"):
            step.logits = run()
        step.run = None  # the graph needs none of it; holding it would keep a finished cache's memory alive
        return step
