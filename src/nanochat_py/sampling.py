"""Choosing the next token from logits: penalties, then greedy / temperature / top-k / top-p / min-p.

With top_p = 1, min_p = 0 and no penalties the random draws are the reference's exactly (top-k: softmax over
the k best, one multinomial draw), so the same seed gives nanochat's own samples. Every accepted value is
defined: a temperature too small to divide by (the scaled logits overflow) is greedy, top-p and min-p always
keep the most likely token however small or large they are, and a penalised logit that overflows float32
saturates at its largest value instead of becoming inf.

The penalties, with the definitions people know them by:
- repetition_penalty r (CTRL, as transformers applies it): a token already in the prompt or the reply has its
  logit divided by r if positive, multiplied by r if negative (r > 1 discourages repeats, r < 1 favours them);
- presence_penalty a and frequency_penalty f (OpenAI's): a token that appeared c times in the reply so far has
  c * f + (c > 0) * a taken off its logit (positive values discourage repeats, negative ones favour them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sample_next(
    logits: torch.Tensor,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    _check(temperature, top_p, min_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs, indices = _distribution(logits, temperature, top_k, top_p, min_p)
    return _pick(indices, torch.multinomial(probs, 1, generator=generator))


def sample_rows(
    logits: torch.Tensor,
    generators: list[torch.Generator | None],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> torch.Tensor:
    """logits [B, V] -> token ids [B], row i drawn with generators[i]: the tokens sample_next gives each row
    alone with its own generator, for one top-k (or sort) and one softmax over all the rows instead of one
    per row (a server's batch of streams with the same settings)."""
    _check(temperature, top_p, min_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs, indices = _distribution(logits, temperature, top_k, top_p, min_p)
    draws = [torch.multinomial(probs[i : i + 1], 1, generator=g) for i, g in enumerate(generators)]
    return _pick(indices, torch.cat(draws))


def _check(temperature: float, top_p: float, min_p: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")


def _distribution(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The probabilities to draw from, row by row, and the token ids they stand for (None: the whole vocabulary)."""
    if top_k and top_k > 0:
        values, indices = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)
    elif top_p < 1:
        values, indices = torch.sort(logits, dim=-1, descending=True)
    else:
        values, indices = logits, None
    probs = F.softmax(_scaled(values, temperature), dim=-1)
    if top_p < 1:
        # drop the tail once the tokens before it already cover top_p of the mass; the first always stays
        # (a top_p below float32's smallest number compares as 0 and would drop it too)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
    if min_p > 0:
        # keep tokens at least min_p times as likely as the most likely one (which always passes: p >= min_p * p)
        probs = probs.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), 0.0)
    return probs, indices


def _pick(indices: torch.Tensor | None, choice: torch.Tensor) -> torch.Tensor:
    """The token ids of the drawn positions (choice [B, 1])."""
    return choice[:, 0] if indices is None else indices.gather(1, choice)[:, 0]


def _scaled(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """values / temperature; a row where that overflows (or the temperature rounds to 0) becomes greedy: 0 at
    its argmax, -inf elsewhere. Overflow means the gap to the runner-up is astronomically many temperatures
    wide, so greedy is what sampling would give anyway."""
    scaled = values / temperature
    broken = (scaled.isnan() | scaled.isposinf()).any(dim=-1, keepdim=True)
    if not broken.any():
        return scaled
    best = values.argmax(dim=-1, keepdim=True)
    greedy = torch.full_like(values, float("-inf")).scatter(-1, best, 0.0)
    return torch.where(broken, greedy, scaled)


@dataclass(frozen=True)
class Penalties:
    """How much to discourage (or, below the neutral value, favour) tokens that already appeared."""

    repetition: float = 1.0  # > 0; 1 = off
    presence: float = 0.0  # 0 = off
    frequency: float = 0.0  # 0 = off

    def __post_init__(self):
        if not self.repetition > 0:  # also refuses NaN
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition}")
        for name, value in (("presence_penalty", self.presence), ("frequency_penalty", self.frequency)):
            if not abs(value) < float("inf"):
                raise ValueError(f"{name} must be a finite number, got {value}")

    @property
    def active(self) -> bool:
        return self.repetition != 1 or self.presence != 0 or self.frequency != 0


class TokenHistory:
    """What the penalties look at, for each of B rows: which tokens the prompt and the reply hold, and how often
    each token appeared in the reply (OpenAI's penalties count the reply only; the repetition penalty, as in
    transformers, the whole text)."""

    def __init__(self, prompt: list[int], rows: int, vocab_size: int, device: torch.device | str = "cpu"):
        self.seen = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        self.seen[:, torch.tensor(prompt, dtype=torch.long, device=device)] = True
        self.counts = torch.zeros(rows, vocab_size, dtype=torch.float32, device=device)

    def add(self, tokens: list[int]) -> None:
        """One new token per row."""
        rows = torch.arange(len(tokens), device=self.seen.device)
        ids = torch.tensor(tokens, dtype=torch.long, device=self.seen.device)
        self.seen[rows, ids] = True
        self.counts[rows, ids] += 1

    def penalize(self, logits: torch.Tensor, penalties: Penalties) -> torch.Tensor:
        """logits [B, V] (float32) with the penalties applied: a new tensor, the input is left as it is."""
        if not penalties.active:
            return logits
        # in float64, where no finite float32 logit over any positive float penalty overflows to NaN (as
        # -inf * 0 would if the penalty rounded to 0 in float32); the result saturates at float32's largest
        z = logits.double()
        r = penalties.repetition
        if r != 1:
            z = torch.where(self.seen, torch.where(z > 0, z / r, z * r), z)
        if penalties.frequency or penalties.presence:
            z = z - self.counts * penalties.frequency - (self.counts > 0) * penalties.presence
        return z.clamp(max=torch.finfo(torch.float32).max).to(logits.dtype)
