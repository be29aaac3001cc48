"""The fixed-shape decode steps that CUDA graphs replay compute what ordinary decoding computes.

Run here on the CPU, uncaptured (the same Python, the same ops, minus the capture), so every generation
and both cache modes are checked on any machine; tests/test_cuda.py replays the real graphs on a GPU.
"""

from __future__ import annotations

import functools

import pytest
import torch

from conftest import random_model
from nanochat_py import cuda_graphs, kernels
from nanochat_py.config import GENERATIONS


def _decode(model, ids: torch.Tensor, prefill: int, per_row: bool) -> torch.Tensor:
    """Logits of every decode step after a prefill; per-row: each row prefilled to a different length."""
    B, total = ids.shape
    if not per_row:
        cache = model.new_cache(B, total)
        model(ids[:, :prefill], cache=cache)
        return torch.cat([model(ids[:, t : t + 1], cache=cache) for t in range(prefill, total)], dim=1)
    cache = model.new_cache(B + 1, total, per_row=True)  # a spare row stays empty, as in a server's batch
    for b in range(B):
        one = model.new_cache(1, total)
        model(ids[b : b + 1, : prefill - 3 * b], cache=one)
        cache.load_row(b, one)
    steps = []
    for t in range(total - prefill):
        column = torch.stack([ids[b, prefill - 3 * b + t] for b in range(B)] + [ids[0, 0]])[:, None]
        steps.append(model(column, cache=cache)[:B])
    return torch.cat(steps, dim=1)


@pytest.fixture
def uncaptured_graphs(monkeypatch):
    """Route decode steps through GraphedDecode on the CPU, with small spans so they change on the way."""
    monkeypatch.setattr(cuda_graphs, "applies", cuda_graphs.fits)
    monkeypatch.setattr(cuda_graphs, "GraphedDecode", functools.partial(cuda_graphs.GraphedDecode, capture=False))
    monkeypatch.setattr(cuda_graphs, "MIN_SPAN", 16)


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("per_row", [False, True], ids=["shared", "per-row"])
@torch.inference_mode()
def test_fixed_shape_steps_equal_ordinary_decoding(generation, per_row, request):
    model = random_model(generation, short_window=12, n_kv_head=2)
    ids = torch.randint(0, model.config.vocab_size, (3, 70))
    with kernels.switched_off():  # both sides on plain torch ops
        want = _decode(model, ids, 30, per_row)
        assert model._graphs is None
        request.getfixturevalue("uncaptured_graphs")
        got = _decode(model, ids, 30, per_row)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    spans = sorted({key[1] for key in model._graphs.graphs})
    assert spans == [32, 64, 70], "spans: powers of two above the furthest position, at most the capacity (70)"


@torch.inference_mode()
def test_a_step_shape_is_captured_once_and_reused(uncaptured_graphs):
    model = random_model("G5", short_window=12)
    cache = model.new_cache(2, 40)
    model(torch.randint(0, 1024, (2, 20)), cache=cache)
    for _ in range(8):  # positions 20..27: one span, one batch size, one cache
        model(torch.randint(0, 1024, (2, 1)), cache=cache)
    assert len(model._graphs.graphs) == 1
    assert cache.pos == 28


@torch.inference_mode()
def test_a_full_cache_is_refused(uncaptured_graphs):
    model = random_model("G0")
    cache = model.new_cache(1, 5)
    model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="KV cache is full"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
