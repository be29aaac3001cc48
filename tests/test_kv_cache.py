"""Decoding with the KV cache gives the same logits as a cache-free forward, at every step, in every generation."""

from __future__ import annotations

import pytest
import torch

from conftest import random_model
from nanochat_py.config import GENERATIONS

CASES = [(g, {}) for g in GENERATIONS] + [
    ("G5", {"n_kv_head": 1, "n_layer": 5, "window_pattern": "SSSL"}),  # MQA, odd depth
    ("G4", {"window_pattern": "SL", "short_window": 16}),  # a window passed many times over
    ("G1w", {"n_kv_head": 4, "window_pattern": "S", "short_window": 7}),
]
IDS = [f"{g}-{'-'.join(f'{k}={v}' for k, v in f.items())}" for g, f in CASES]


def _full_logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(ids)[:, -1]


@pytest.mark.parametrize(("generation", "fields"), CASES, ids=IDS)
@torch.no_grad()
def test_decode_matches_full_forward_every_step(generation, fields):
    model = random_model(generation, **fields)
    total = 250  # past every short window in these configs (128 at sequence_len 256)
    ids = torch.randint(0, model.config.vocab_size, (1, total))
    cache = model.new_cache(1, total)
    prefill = 9
    cached = model(ids[:, :prefill], cache=cache, last_only=True)[:, -1]
    torch.testing.assert_close(cached, _full_logits(model, ids[:, :prefill]), atol=1e-4, rtol=0)
    for t in range(prefill, total):
        cached = model(ids[:, t : t + 1], cache=cache)[:, -1]
        torch.testing.assert_close(cached, _full_logits(model, ids[:, : t + 1]), atol=1e-4, rtol=0, msg=f"position {t}")
    assert cache.pos == total


@pytest.mark.parametrize(("generation", "fields"), CASES, ids=IDS)
@torch.no_grad()
def test_chunked_prefill_matches_full_forward(generation, fields):
    model = random_model(generation, **fields)
    ids = torch.randint(0, model.config.vocab_size, (2, 200))
    cache = model.new_cache(2, 200)
    model(ids[:, :130], cache=cache)
    chunk = model(ids[:, 130:200], cache=cache)  # a second prefill chunk that starts mid-sequence
    torch.testing.assert_close(chunk, model(ids)[:, 130:], atol=1e-4, rtol=0)


@torch.no_grad()
def test_expanded_cache_rows_decode_independently():
    model = random_model("G5")
    prompt = torch.randint(0, 1024, (1, 40))
    cache = model.new_cache(1, 40)
    model(prompt, cache=cache)
    rows = cache.expand(3, capacity=60)
    nxt = torch.randint(0, 1024, (3, 20))
    for t in range(20):
        out = model(nxt[:, t : t + 1], cache=rows)[:, -1]
    for r in range(3):
        full = model(torch.cat([prompt, nxt[r : r + 1]], dim=1))[:, -1]
        torch.testing.assert_close(out[r : r + 1], full, atol=1e-4, rtol=0)


@torch.no_grad()
def test_last_only_equals_last_row_of_all_logits():
    model = random_model("G2")
    ids = torch.randint(0, 1024, (2, 33))
    torch.testing.assert_close(model(ids, last_only=True)[:, 0], model(ids)[:, -1], atol=1e-5, rtol=0)


def test_full_cache_refuses_more_tokens():
    model = random_model("G0")
    cache = model.new_cache(1, 8)
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="KV cache is full"):
            model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


@pytest.mark.parametrize(("generation", "fields"), CASES, ids=IDS)
@torch.no_grad()
def test_rows_at_different_positions_decode_like_separate_sequences(generation, fields):
    """Per-row mode (a server batching unrelated chats): every row matches its own cache-free forward."""
    model = random_model(generation, **fields)
    lengths = [5, 140, 31]  # one row starts past the 128-token short window
    seqs = [torch.randint(0, model.config.vocab_size, (1, n + 12)) for n in lengths]
    slots = model.new_cache(4, 200, per_row=True)  # one spare row stays empty
    for row, (seq, n) in enumerate(zip(seqs, lengths, strict=True)):
        prefill = model.new_cache(1, n)
        model(seq[:, :n], cache=prefill)
        slots.load_row(row, prefill)
    view = slots.rows(3)
    for step in range(12):
        column = torch.cat([seq[:, n + step : n + step + 1] for seq, n in zip(seqs, lengths, strict=True)])
        out = model(column, cache=view)[:, -1]
        for row, (seq, n) in enumerate(zip(seqs, lengths, strict=True)):
            full = model(seq[:, : n + step + 1])[:, -1]
            torch.testing.assert_close(out[row : row + 1], full, atol=1e-4, rtol=0, msg=f"row {row} step {step}")
    assert slots.row_pos.tolist() == [n + 12 for n in lengths] + [0]
