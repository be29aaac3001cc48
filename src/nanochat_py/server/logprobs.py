"""Log-probabilities: computed by the worker from a row's raw logits (the model's own soft-capped distribution in
float32, before temperature, penalties or any other sampling control: what lm-evaluation-harness scores), and
shaped as OpenAI's two formats: chat's `logprobs.content` and legacy completions' `tokens`, `token_logprobs`,
`top_logprobs` and `text_offset`.

A token that is not whole UTF-8 on its own (part of a character) is named `bytes:\\xe2\\x80` as OpenAI names
it; its bytes are in chat's `bytes` field.
"""

from __future__ import annotations

import codecs

import torch

from ..tokenizer import Tokenizer
from .job import TokenLogprob


# --- computing (worker thread) -------------------------------------------------------------------------------
def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """logits [V] of one position -> the logprob of `token` there and the `top` most likely tokens."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    best = lp.topk(top) if top else None
    return TokenLogprob(token, float(lp[token]), _pairs(best.indices, best.values) if best else [])


def prompt_logprobs(logits: torch.Tensor, prompt: list[int], top: int) -> list[TokenLogprob | None]:
    """logits [T, V] of a whole prompt -> one entry per prompt token: None for the first (it has no context),
    then each token's logprob given the tokens before it."""
    lp = torch.log_softmax(logits[:-1].float(), dim=-1)  # position t predicts token t + 1
    following = torch.tensor(prompt[1:], dtype=torch.long, device=lp.device)
    chosen = lp.gather(1, following[:, None])[:, 0].tolist()
    if top:
        best = lp.topk(top, dim=-1)
        tops = [_pairs(i, v) for i, v in zip(best.indices, best.values, strict=True)]
    else:
        tops = [[] for _ in chosen]
    return [None] + [TokenLogprob(t, c, k) for t, c, k in zip(prompt[1:], chosen, tops, strict=True)]


def _pairs(indices: torch.Tensor, values: torch.Tensor) -> list[tuple[int, float]]:
    return list(zip(indices.tolist(), values.tolist(), strict=True))


# --- shaping (request handlers) ------------------------------------------------------------------------------
def token_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def chat_content(tokenizer: Tokenizer, entries: list[TokenLogprob]) -> list[dict]:
    """Chat's `logprobs.content` items: token, logprob, bytes and the top alternatives."""

    def item(token: int, logprob: float) -> dict:
        data = tokenizer.decode_bytes([token])
        return {"token": token_text(data), "logprob": logprob, "bytes": list(data)}

    return [{**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]} for e in entries]


class CompletionLogprobs:
    """Legacy completions' logprobs object, built piece by piece (a stream sends each piece in its chunk).

    `text_offset` is where each token's text starts in the choice's `text`, which is the tokens' bytes decoded
    as UTF-8 (a broken sequence becomes one U+FFFD): a token that continues a character starts at that
    character, a token after bytes that cannot be completed starts after their U+FFFD. Each offset is decided by
    the token's own bytes, so a stream sends the same offsets. `top_logprobs` maps the top alternatives' texts to
    their logprobs, and always holds the chosen token too (so up to logprobs + 1 entries)."""

    def __init__(self, tokenizer: Tokenizer, offset: int = 0):
        self.tokenizer = tokenizer
        self.offset = offset
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, tokens: list[int], entries: list[TokenLogprob | None]) -> dict:
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, entry in zip(tokens, entries, strict=True):
            data = self.tokenizer.decode_bytes([token])
            out["tokens"].append(token_text(data))
            held = self._utf8.getstate()[0]  # the start of a character the text so far ends in
            out["text_offset"].append(self.offset + (1 if held and not _completes(held, data) else 0))
            self.offset += len(self._utf8.decode(data))
            out["token_logprobs"].append(None if entry is None else entry.logprob)
            out["top_logprobs"].append(None if entry is None else self._top(entry))
        return out

    def _top(self, entry: TokenLogprob) -> dict[str, float]:
        top = {token_text(self.tokenizer.decode_bytes([t])): lp for t, lp in entry.top}
        top.setdefault(token_text(self.tokenizer.decode_bytes([entry.token])), entry.logprob)
        return top


def _completes(held: bytes, data: bytes) -> bool:
    """Whether `data` goes on with the character `held` begins (rather than breaking it into a U+FFFD)."""
    lead = held[0]
    length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    try:
        codecs.getincrementaldecoder("utf-8")().decode(held + data[: length - len(held)])
    except UnicodeDecodeError:
        return False
    return True


def decoded(tokenizer: Tokenizer, tokens: list[int]) -> str:
    """The tokens' text as the completions route shows it: UTF-8 decoded as a whole, special tokens by name."""
    return tokenizer.decode_bytes(tokens).decode("utf-8", errors="replace")
