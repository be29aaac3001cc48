"""Chatbot: a loaded model + tokenizer + engine, with the text-level API (`generate`, `chat`).

Turns chats into prompts (dropping the oldest turns when a chat outgrows the context), and tokens back
into text pieces that never split a UTF-8 character, with tool calls kept apart from the reply text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from .config import ModelConfig
from .conversation import merge_system, messages_of
from .engine import Engine
from .model import GPT
from .tokenizer import Tokenizer

log = logging.getLogger("nanochat_py")


@dataclass
class Piece:
    kind: str  # "text", "python" (a tool call the model wrote) or "python_output" (the tool's answer)
    text: str


class PieceDecoder:
    """Reply tokens -> Pieces: UTF-8-safe text, with tool calls and tool outputs as their own kinds."""

    def __init__(self, tokenizer: Tokenizer):
        tok = self.tokenizer = tokenizer
        self.kinds = {
            tok.special("<|python_start|>"): "python",
            tok.special("<|output_start|>"): "python_output",
            tok.special("<|python_end|>"): "text",
            tok.special("<|output_end|>"): "text",
        }
        self.decoder, self.kind = tok.stream_decoder(), "text"

    def add(self, token: int) -> list[Piece]:
        if token in self.kinds:
            pieces = self.flush()
            self.kind = self.kinds[token]
            return pieces
        if token in self.tokenizer.special_ids:
            return []  # a stray special token has no text
        text = self.decoder.add(token)
        return [Piece(self.kind, text)] if text else []

    def flush(self) -> list[Piece]:
        tail = self.decoder.flush()
        return [Piece(self.kind, tail)] if tail else []


class Chatbot:
    def __init__(self, model: GPT, tokenizer: Tokenizer, source: str = ""):
        model.tokenizer = tokenizer  # so that save_checkpoint(bot.model, ...) writes the tokenizer too
        self.model = model
        self.tokenizer = tokenizer
        self.engine = Engine(model, tokenizer)
        self.source = source

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self):
        return self.model.device

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Chatbot({self.source!r}, generation={c.generation}, n_layer={c.n_layer}, n_embd={c.n_embd}, "
            f"device={self.device}, dtype={self.model.dtype})"
        )

    # --- tokens -------------------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[int], max_tokens: int = 256, **sampling) -> list[int]:
        """New tokens only, without the stop token. sampling: temperature, top_k, top_p, min_p, repetition_penalty,
        presence_penalty, frequency_penalty (see sampling.py), seed, use_tools."""
        return self.sample(prompt_ids, 1, max_tokens, **sampling)[0]

    def sample(self, prompt_ids: list[int], num_samples: int, max_tokens: int = 256, **sampling) -> list[list[int]]:
        """`num_samples` continuations of one prompt, decoded together in one batch."""
        out: list[list[int]] = [[] for _ in range(num_samples)]
        finished = [False] * num_samples
        for step in self.engine.generate(prompt_ids, num_samples, max_tokens, **sampling):
            for i, token in enumerate(step.tokens):
                if finished[i]:
                    continue
                if step.done[i]:
                    finished[i] = True
                else:
                    out[i].append(token)
        return out

    # --- chat ---------------------------------------------------------------------------------------------
    def chat(self, messages, stream: bool = False, max_tokens: int = 512, **sampling):
        """The assistant's reply to `messages` (a list of {'role', 'content'}), as a str or a stream of str."""
        pieces = readable(self.reply(messages, max_tokens=max_tokens, **sampling))
        return pieces if stream else "".join(pieces)

    def reply(self, messages, max_tokens: int = 512, **sampling) -> Iterator[Piece]:
        """The reply as pieces: text, tool calls and tool outputs kept apart."""
        prompt = self.prompt_for(messages, reserve=max_tokens)
        pieces = PieceDecoder(self.tokenizer)
        for step in self.engine.generate(prompt, 1, max_tokens, **sampling):
            if step.done[0]:
                break
            yield from pieces.add(step.tokens[0])
        yield from pieces.flush()

    def prompt_for(self, messages, reserve: int = 512) -> list[int]:
        """Render the chat for the assistant's next reply, dropping the oldest turns if it does not fit.

        At most `reserve` tokens (and never more than half the context) are kept free for the reply.
        """
        messages = merge_system(messages_of(messages))
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        limit = self.config.sequence_len - min(reserve, self.config.sequence_len // 2)

        def without(exchanges: int) -> list[int]:  # the prompt with the oldest user+assistant exchanges left out
            return self.tokenizer.render_for_completion(messages[2 * exchanges :])

        # the fewest exchanges to leave out, by bisection: a long chat is rendered O(log n) times, not n times
        low, high = 0, len(messages) // 2
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if len(without(mid)) <= limit else (mid + 1, high)
        prompt, dropped = without(low), 2 * low
        if dropped:
            log.warning(
                "the chat is longer than the model's %d-token context: left out the %d oldest messages",
                self.config.sequence_len,
                dropped,
            )
        if len(prompt) > limit:
            # one message alone is too long: keep <|bos|><|user_start|> and the end of it
            log.warning("the last message is longer than the model's context: kept its last %d tokens", limit - 2)
            prompt = prompt[:2] + prompt[len(prompt) - (limit - 2) :]
        return prompt


_TRANSITIONS = {
    ("text", "python"): "[calculator: ",
    ("python", "python_output"): " = ",
    ("python", "text"): "]",
    ("python_output", "text"): "]",
    ("text", "python_output"): "[calculator = ",
    ("python_output", "python"): "] [calculator: ",
}


class ReadableText:
    """Pieces -> plain text, with each tool call and its answer set off as `[calculator: 12*7 = 84]`."""

    def __init__(self):
        self.kind = "text"

    def add(self, piece: Piece) -> str:
        prefix = ""
        if piece.kind != self.kind:
            prefix, self.kind = _TRANSITIONS[self.kind, piece.kind], piece.kind
        return prefix + piece.text

    def close(self) -> str:
        return "]" if self.kind != "text" else ""


def readable(pieces: Iterator[Piece]) -> Iterator[str]:
    """Plain text of a stream of pieces (see ReadableText)."""
    text = ReadableText()
    for piece in pieces:
        yield text.add(piece)
    tail = text.close()
    if tail:
        yield tail
