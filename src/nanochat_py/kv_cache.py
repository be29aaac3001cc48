"""A preallocated key/value cache, written in place, one slot per layer.

Keys and values are stored as [B, n_kv_head, capacity, head_dim] so attention reads them with no copy;
sliding-window layers read only the last `window + 1` positions.

Two ways to use it:
- shared position (`pos`): every row is at the same position, e.g. several samples of one prompt;
- per-row positions (`per_row=True`): each row is a separate sequence at its own position, as when a
  server decodes many conversations together. Rows are filled with `load_row` from a prefilled cache and
  then advance one token per step.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        head_dim: int,
        capacity: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        per_row: bool = False,
    ):
        shape = (n_layer, batch_size, n_kv_head, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # positions written, when all rows share one position
        self.row_pos = torch.zeros(batch_size, dtype=torch.long, device=device) if per_row else None
        self.row_end = 0  # 1 + the largest row position this step (per-row mode)
        self.prev_embedding: torch.Tensor | None = None  # last un-smeared token embedding (G5 smear)

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def begin_row_step(self) -> torch.Tensor:
        """Per-row mode: the positions this step writes, one per row (computed once per forward)."""
        self.row_end = int(self.row_pos.max()) + 1
        if self.row_end > self.capacity:
            raise ValueError(f"KV cache is full: position {self.row_end - 1} needed, capacity {self.capacity}")
        return self.row_pos

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([B, G, T, d]) at the current position(s); return every cached key/value up to them."""
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)  # a bf16 cache under fp32 activations (quantize.py)
        if self.row_pos is not None:
            rows = torch.arange(k.shape[0], device=k.device)
            self.k[layer, rows, :, self.row_pos] = k[:, :, 0]
            self.v[layer, rows, :, self.row_pos] = v[:, :, 0]
            return self.k[layer, :, :, : self.row_end], self.v[layer, :, :, : self.row_end]
        end = self.pos + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache is full: {end} positions needed, capacity {self.capacity}")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        if self.row_pos is not None:
            self.row_pos += n
        else:
            self.pos += n

    def set_prev_embedding(self, x: torch.Tensor) -> None:
        if self.prev_embedding is not None and self.row_pos is not None:
            self.prev_embedding.copy_(x)  # in place: a row view must update the cache it was taken from
        else:
            self.prev_embedding = x

    def expand(self, batch_size: int, capacity: int | None = None) -> KVCache:
        """A new cache of `batch_size` rows, each a copy of row 0 of this one (prefill once, sample many)."""
        capacity = capacity or self.capacity
        n_layer, _, n_kv_head, _, head_dim = self.k.shape
        out = KVCache(n_layer, batch_size, n_kv_head, head_dim, capacity, self.k.device, self.k.dtype)
        out.k[:, :, :, : self.pos] = self.k[:, :1, :, : self.pos]
        out.v[:, :, :, : self.pos] = self.v[:, :1, :, : self.pos]
        out.pos = self.pos
        if self.prev_embedding is not None:
            out.prev_embedding = self.prev_embedding[:1].expand(batch_size, -1, -1).clone()
        return out

    # --- per-row mode ---------------------------------------------------------------------------------
    def load_row(self, row: int, prefilled: KVCache) -> None:
        """Put a batch-1, shared-position cache (a prefilled prompt) into `row`, which then continues it."""
        n = prefilled.pos
        if n >= self.capacity:
            raise ValueError(f"a {n}-token prompt does not fit a {self.capacity}-position cache")
        self.k[:, row, :, :n] = prefilled.k[:, 0, :, :n]
        self.v[:, row, :, :n] = prefilled.v[:, 0, :, :n]
        self.row_pos[row] = n
        if prefilled.prev_embedding is not None:
            if self.prev_embedding is None:
                c = prefilled.prev_embedding.shape[-1]
                self.prev_embedding = self.k.new_zeros(self.batch_size, 1, c)
            self.prev_embedding[row] = prefilled.prev_embedding[0]

    def at(self, positions: torch.Tensor, end: int) -> KVCache:
        """A per-row view of all of this cache's memory whose rows write at `positions` and attend to the
        first `end` slots: a decode step whose shapes do not depend on where the rows are (CUDA graphs)."""
        view = KVCache.__new__(KVCache)
        view.k, view.v, view.pos = self.k, self.v, 0
        view.row_pos, view.row_end = positions, end
        view.prev_embedding = self.prev_embedding  # updated in place by the step (set_prev_embedding)
        return view

    def rows(self, n: int) -> KVCache:
        """A view of the first n rows that reads and writes this cache's memory (no copy)."""
        view = KVCache.__new__(KVCache)
        view.k, view.v, view.pos = self.k[:, :n], self.v[:, :n], 0
        view.row_pos = self.row_pos[:n]
        view.row_end = 0
        view.prev_embedding = self.prev_embedding[:n] if self.prev_embedding is not None else None
        return view
