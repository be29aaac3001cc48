"""sample_next with hostile values: every accepted (temperature, top_k, top_p) gives a token, never inf/NaN."""

from __future__ import annotations

import itertools

import pytest
import torch

from nanochat_py.sampling import sample_next

TINY_TEMPERATURES = [4e-38, 1e-39, 1e-45, 5e-324, 1e-300]  # the scaled logits overflow float32
TEMPERATURES = [*TINY_TEMPERATURES, 1e-30, 1e-6, 0.6, 1.0, 2.0]
TOP_KS = [0, 1, 2, 200, 5000]
TOP_PS = [5e-324, 1e-300, 1e-40, 1e-7, 0.5, 1.0]


def logits_batch() -> torch.Tensor:
    """Rows a model can give: soft-capped values, large ones, a near-tie, a wide spread, masked tokens."""
    torch.manual_seed(0)
    rows = [
        15 * torch.tanh(torch.randn(1024) * 3),
        torch.randn(1024) * 1e4,
        torch.full((1024,), 20.0),
        torch.linspace(-1e30, 1e30, 1024),
    ]
    rows[2][3] = 20.000002  # the best token by one ulp
    masked = torch.randn(1024)
    masked[::2] = float("-inf")
    rows.append(masked)
    return torch.stack(rows)


@pytest.mark.parametrize("temperature,top_k,top_p", list(itertools.product(TEMPERATURES, TOP_KS, TOP_PS)))
def test_every_accepted_value_gives_a_valid_token(temperature, top_k, top_p):
    logits = logits_batch()
    tokens = sample_next(logits, torch.Generator().manual_seed(1), temperature, top_k, top_p)
    assert tokens.shape == (len(logits),)
    assert ((tokens >= 0) & (tokens < logits.shape[1])).all()
    assert torch.isfinite(logits.gather(1, tokens[:, None])).all()  # never a masked token


@pytest.mark.parametrize("temperature", TINY_TEMPERATURES)
@pytest.mark.parametrize("top_k", [0, 50])
def test_a_temperature_too_small_to_divide_by_is_greedy(temperature, top_k):
    logits = logits_batch()
    for seed in range(5):
        tokens = sample_next(logits, torch.Generator().manual_seed(seed), temperature, top_k)
        assert tokens.tolist() == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("top_p", [5e-324, 1e-300, 1e-40])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_a_tiny_top_p_keeps_the_top_token(top_p, temperature):
    logits = logits_batch()
    tokens = sample_next(logits, torch.Generator().manual_seed(3), temperature, 0, top_p)
    assert tokens.tolist() == logits.argmax(dim=-1).tolist()


def test_ordinary_temperatures_still_sample():
    logits = torch.zeros(2000, 4)
    tokens = sample_next(logits, torch.Generator().manual_seed(0), 1.0)
    assert set(tokens.tolist()) == {0, 1, 2, 3}
