"""A preallocated key/value cache, written in place, one slot per layer.

All rows of a batch share one position (several samples of one prompt, or a batch that was prefilled
together). Keys and values are stored as [B, n_kv_head, capacity, head_dim] so attention reads them with
no copy; sliding-window layers read only the last `window + 1` positions.
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
    ):
        shape = (n_layer, batch_size, n_kv_head, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # number of positions already written
        self.prev_embedding: torch.Tensor | None = None  # last un-smeared token embedding (G5 smear)

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([B, G, T, d]) at the current position; return every cached key/value up to them."""
        end = self.pos + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache is full: {end} positions needed, capacity {self.capacity}")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

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
