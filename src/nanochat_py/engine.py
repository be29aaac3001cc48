"""The generation loop: prefill once, decode step by step, run the calculator tool when the model calls it.

Works on token ids only (text lives in chat.py). Several samples of one prompt decode together as one
batch over a shared KV cache. Each step yields a `Step` holding every row's token and whether the engine
forced it (tool output) rather than the model sampling it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .model import GPT
from .sampling import sample_next
from .tokenizer import Tokenizer
from .tools import calculate


@dataclass
class Step:
    tokens: list[int]  # one per row
    forced: list[bool]  # True where the engine inserted the token (tool output), not the model
    done: list[bool]  # True once a row has ended (this step's token may be the stop token)


@dataclass
class _Row:
    forced: deque = field(default_factory=deque)
    in_python: bool = False
    python_tokens: list[int] = field(default_factory=list)
    done: bool = False


class Engine:
    def __init__(self, model: GPT, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        tok = tokenizer
        self.stop_ids = {tok.bos_token_id, *_maybe(tok, "<|assistant_end|>")}
        self.python_start, self.python_end = _maybe_one(tok, "<|python_start|>"), _maybe_one(tok, "<|python_end|>")
        self.output_start, self.output_end = _maybe_one(tok, "<|output_start|>"), _maybe_one(tok, "<|output_end|>")

    @property
    def context_len(self) -> int:
        return self.model.config.sequence_len

    @torch.inference_mode()
    def generate(
        self,
        prompt: list[int],
        num_samples: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        use_tools: bool = True,
    ) -> Iterator[Step]:
        """Yield one Step per generated position until every row stops, max_tokens, or the context is full."""
        if not prompt:
            raise ValueError("the prompt is empty: it needs at least one token (e.g. <|bos|>)")
        if len(prompt) >= self.context_len:
            raise ValueError(f"the prompt has {len(prompt)} tokens; the model's context is {self.context_len}")
        model = self.model
        generator = torch.Generator(device=model.device)
        generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
        capacity = min(self.context_len, len(prompt) + max_tokens)
        cache = model.new_cache(1, capacity if num_samples == 1 else len(prompt))
        ids = torch.tensor([prompt], dtype=torch.long, device=model.device)
        logits = model(ids, cache=cache, last_only=True)[:, -1]
        if num_samples > 1:  # prefill once, then give every sample its own copy of the cache
            cache = cache.expand(num_samples, capacity)
            logits = logits.expand(num_samples, -1)
        rows = [_Row() for _ in range(num_samples)]
        for _ in range(max_tokens):
            sampled = sample_next(logits, generator, temperature, top_k, top_p).tolist()
            tokens, forced = [], []
            for row, token in zip(rows, sampled, strict=True):
                is_forced = bool(row.forced)
                token = row.forced.popleft() if is_forced else token
                tokens.append(token)
                forced.append(is_forced)
                if not row.done:
                    self._advance_row(row, token, use_tools)
            yield Step(tokens, forced, [r.done for r in rows])
            if all(r.done for r in rows) or cache.pos >= cache.capacity:
                return
            column = torch.tensor(tokens, dtype=torch.long, device=model.device)[:, None]
            logits = model(column, cache=cache, last_only=True)[:, -1]

    def _advance_row(self, row: _Row, token: int, use_tools: bool) -> None:
        """Stop tokens end a row; a finished <|python_start|>...<|python_end|> call queues the tool's answer."""
        if token in self.stop_ids:
            row.done = True
        elif token == self.python_start:
            row.in_python, row.python_tokens = True, []
        elif token == self.python_end and row.in_python:
            row.in_python = False
            result = calculate(self.tokenizer.decode(row.python_tokens)) if use_tools and row.python_tokens else None
            if result is not None and self.output_start is not None:
                row.forced.extend([self.output_start, *self.tokenizer.encode(result), self.output_end])
        elif row.in_python:
            row.python_tokens.append(token)


def _maybe(tok: Tokenizer, name: str) -> list[int]:
    return [tok.encoding._special_tokens[name]] if name in tok.encoding._special_tokens else []


def _maybe_one(tok: Tokenizer, name: str) -> int | None:
    found = _maybe(tok, name)
    return found[0] if found else None
