"""sample_next with hostile values: every accepted (temperature, top_k, top_p, min_p, penalties) gives a token,
never inf/NaN; the penalties and min_p are the definitions transformers and OpenAI use."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from transformers.generation.logits_process import MinPLogitsWarper, RepetitionPenaltyLogitsProcessor

from nanochat_py.sampling import Penalties, TokenHistory, sample_next, sample_rows

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


@pytest.mark.parametrize(
    "temperature,top_k,top_p,min_p",
    [(1.0, 50, 1.0, 0.0), (0.6, 0, 1.0, 0.0), (1.0, 0, 0.9, 0.0), (2.0, 200, 0.5, 0.05), (1e-39, 50, 1.0, 0.0),
     (0.0, 50, 1.0, 0.0)],
)  # fmt: skip
def test_rows_sampled_together_draw_what_each_draws_alone(temperature, top_k, top_p, min_p):
    logits = torch.cat([logits_batch(), torch.randn(6, 1024) * 3])  # 11 rows
    together = [torch.Generator().manual_seed(100 + i) for i in range(len(logits))]
    alone = [torch.Generator().manual_seed(100 + i) for i in range(len(logits))]
    for _ in range(20):  # each generator moves on exactly as it does alone, draw after draw
        got = sample_rows(logits, together, temperature, top_k, top_p, min_p)
        want = [
            int(sample_next(logits[i : i + 1], g, temperature, top_k, top_p, min_p)[0]) for i, g in enumerate(alone)
        ]
        assert got.tolist() == want


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


# --- min_p and the penalties ----------------------------------------------------------------------------------
PENALTIES = [  # each repetition penalty, with the presence and frequency extremes in turn
    Penalties(repetition=r, presence=a, frequency=f)
    for r, (a, f) in zip(
        [5e-324, 1e-300, 1e-40, 0.5, 1.0, 2.0] * 2,
        [(-2.0, 2.0), (2.0, -2.0), (2.0, 2.0), (-2.0, -2.0)] * 3,
        strict=True,
    )
]
MIN_PS = [0.0, 5e-324, 1e-40, 0.5, 1.0]


@functools.cache
def history_of(rows: int, vocab: int) -> TokenHistory:
    """Every other token in the prompt, and each of the first 300 tokens once or twice in the reply."""
    history = TokenHistory(list(range(0, vocab, 2)), rows, vocab)
    for token in [*range(300), *range(0, 300, 3)]:
        history.add([token] * rows)
    return history


@pytest.mark.parametrize("penalties", PENALTIES, ids=str)
@pytest.mark.parametrize("min_p", MIN_PS)
@pytest.mark.parametrize("temperature", [0.0, 1e-39, 0.6])
def test_every_accepted_penalty_and_min_p_gives_a_valid_token(penalties, min_p, temperature):
    logits = logits_batch()
    penalized = history_of(*logits.shape).penalize(logits, penalties)
    assert not penalized.isnan().any() and not penalized.isposinf().any()
    assert (penalized.isneginf() == logits.isneginf()).all()  # masked tokens stay masked, no others become so
    tokens = sample_next(penalized, torch.Generator().manual_seed(1), temperature, 50, 0.9, min_p)
    assert ((tokens >= 0) & (tokens < logits.shape[1])).all()
    assert torch.isfinite(logits.gather(1, tokens[:, None])).all()


def test_penalizing_leaves_the_batch_logits_alone():
    logits = logits_batch()
    before = logits.clone()
    history_of(*logits.shape).penalize(logits, Penalties(1.7, 0.5, 0.5))
    assert torch.equal(logits, before)


def test_the_repetition_penalty_is_transformers_own():
    """CTRL's penalty as transformers applies it to every token of the text so far."""
    torch.manual_seed(0)
    logits = 15 * torch.tanh(torch.randn(3, 1024))
    text = torch.randint(0, 1024, (3, 40))
    for r in (0.7, 1.3, 2.0):
        history = TokenHistory([], 3, 1024)
        for column in text.T:
            history.add(column.tolist())
        expected = RepetitionPenaltyLogitsProcessor(r)(text, logits.clone())
        # the same up to float32 rounding (transformers divides in float32, we in float64 and round once)
        assert torch.allclose(history.penalize(logits, Penalties(repetition=r)), expected, rtol=2e-7, atol=0)


def test_presence_and_frequency_penalties_are_openais():
    """logit - count * frequency - (count > 0) * presence, counted over the reply only (not the prompt)."""
    logits = torch.tensor([[3.0, 1.0, -1.0, 0.5]])
    history = TokenHistory([3], 1, 4)  # token 3 is only in the prompt
    for token in (0, 0, 0, 2):
        history.add([token])
    out = history.penalize(logits, Penalties(presence=0.5, frequency=0.25))
    assert out.tolist() == [[3.0 - 3 * 0.25 - 0.5, 1.0, -1.0 - 0.25 - 0.5, 0.5]]


def test_a_repetition_penalty_too_small_to_divide_by_saturates():
    """A seen token's positive logit over a tiny penalty overflows; it saturates, so greedy picks it."""
    logits = torch.tensor([[10.0, 0.5, -3.0]])
    history = TokenHistory([1, 2], 1, 3)
    out = history.penalize(logits, Penalties(repetition=5e-324))
    assert out[0, 1] == torch.finfo(torch.float32).max and out[0, 2] == 0  # -3 * 5e-324 rounds to (minus) zero
    assert sample_next(out, None, temperature=0).tolist() == [1]
    assert sample_next(out, torch.Generator().manual_seed(0), temperature=1.0).tolist() == [1]


def test_min_p_keeps_what_transformers_keeps():
    probs = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05])
    logits = probs.log()[None].expand(4000, -1)
    for min_p in (0.3, 0.5, 0.6, 1.0):
        kept = MinPLogitsWarper(min_p)(None, logits[:1].clone()).isfinite()[0].nonzero()[:, 0].tolist()
        drawn = sample_next(logits, torch.Generator().manual_seed(0), 1.0, min_p=min_p)
        assert sorted(set(drawn.tolist())) == kept, min_p


def test_bad_penalties_are_refused():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="repetition_penalty"):
            Penalties(repetition=bad)
    with pytest.raises(ValueError, match="presence_penalty"):
        Penalties(presence=float("inf"))
    with pytest.raises(ValueError, match="min_p"):
        sample_next(torch.zeros(1, 4), None, min_p=1.5)
