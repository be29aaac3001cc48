"""The generation loop: prefill once, decode step by step, run the calculator tool when the model calls it.

Works on token ids only (text lives in chat.py). Several samples of one prompt decode together as one
batch over a shared KV cache. Each step yields a `Step` holding every row's token and whether the engine
forced it (tool output) rather than the model sampling it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .model import GPT
from .sampling import Penalties, TokenHistory, sample_next
from .tokenizer import Tokenizer
from .tools import calculate


@dataclass
class Step:
    tokens: list[int]  # one per row
    forced: list[bool]  # True where the engine inserted the token (tool output), not the model
    done: list[bool]  # True once a row has ended (this step's token may be the stop token)


class Sequence:
    """One sequence being generated: stop tokens end it; a finished calculator call queues the tool's answer.

    Each step: `next_token(sampled)` picks the token (a queued forced one wins over the sampled one), and
    `feed(token)` moves the state machine on.
    """

    def __init__(self, tokenizer: Tokenizer, use_tools: bool = True, calculator=calculate):
        tok = self.tokenizer = tokenizer
        self.calculator = calculator  # expression -> answer text, or None for no answer
        specials = tok.encoding._special_tokens
        self.stop_ids = {tok.bos_token_id, *[specials[s] for s in ("<|assistant_end|>",) if s in specials]}
        self.python_start, self.python_end = specials.get("<|python_start|>"), specials.get("<|python_end|>")
        self.output_start, self.output_end = specials.get("<|output_start|>"), specials.get("<|output_end|>")
        self.use_tools = use_tools and None not in (self.output_start, self.output_end)
        self.forced: deque[int] = deque()
        self.in_python = False
        self.python_tokens: list[int] = []
        self.done = False

    def next_token(self, sampled: int) -> tuple[int, bool]:
        """(token, forced): the tool's queued answer if any, else the model's sampled token."""
        if self.forced:
            return self.forced.popleft(), True
        return sampled, False

    def feed(self, token: int) -> None:
        if self.done:
            return
        if token in self.stop_ids:
            self.done = True
        elif token == self.python_start:
            self.in_python, self.python_tokens = True, []
        elif token == self.python_end and self.in_python:
            self.in_python = False
            if self.use_tools and self.python_tokens:
                result = self.calculator(self.tokenizer.decode(self.python_tokens))
                if result is not None:
                    self.forced.extend([self.output_start, *self.tokenizer.encode(result), self.output_end])
        elif self.in_python:
            self.python_tokens.append(token)


class Engine:
    def __init__(self, model: GPT, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = Sequence(tokenizer).stop_ids

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
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
    ) -> Iterator[Step]:
        """Yield one Step per generated position until every row stops, max_tokens, or the context is full.

        Sampling: see sampling.py (the penalties count the tokens each row has fed, tool output included)."""
        if not prompt:
            raise ValueError("the prompt is empty: it needs at least one token (e.g. <|bos|>)")
        if len(prompt) >= self.context_len:
            raise ValueError(f"the prompt has {len(prompt)} tokens; the model's context is {self.context_len}")
        penalties = Penalties(repetition_penalty, presence_penalty, frequency_penalty)
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
        rows = [Sequence(self.tokenizer, use_tools) for _ in range(num_samples)]
        history = TokenHistory(prompt, num_samples, logits.size(-1), model.device) if penalties.active else None
        for _ in range(max_tokens):
            if history is not None:
                logits = history.penalize(logits, penalties)
            sampled = sample_next(logits, generator, temperature, top_k, top_p, min_p).tolist()
            tokens, forced = [], []
            for row, token in zip(rows, sampled, strict=True):
                token, is_forced = row.next_token(token)
                tokens.append(token)
                forced.append(is_forced)
                row.feed(token)
            if history is not None:
                history.add(tokens)
            yield Step(tokens, forced, [r.done for r in rows])
            if all(r.done for r in rows) or cache.pos >= cache.capacity:
                return
            column = torch.tensor(tokens, dtype=torch.long, device=model.device)[:, None]
            logits = model(column, cache=cache, last_only=True)[:, -1]
