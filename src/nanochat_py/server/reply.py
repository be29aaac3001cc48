"""A reply's text, built by the worker token by token so that the event loop only formats it.

One object per row: tokens become Pieces (UTF-8-safe text, tool calls apart, for the native API) and readable
text with the job's OpenAI stop strings applied (for the OpenAI API). A raw reply (legacy completions) is the
tokens' text as it is, special tokens by name, with the stop strings applied. Once a stop string appears the
row is over: `stopped` tells the worker to end it at once.
"""

from __future__ import annotations

from ..chatbot import PieceDecoder, ReadableText
from ..tokenizer import Tokenizer
from .job import Delta
from .stops import StopMatcher


class ReplyText:
    def __init__(self, tokenizer: Tokenizer, stops: list[str], raw: bool = False):
        self.pieces = PieceDecoder(tokenizer)
        self.readable = ReadableText()
        self.stop = StopMatcher(stops)
        self.raw = tokenizer.stream_decoder() if raw else None

    @property
    def stopped(self) -> bool:
        return self.stop.stopped

    def add(self, token: int) -> Delta:
        if self.raw is not None:
            return Delta([], self.stop.add(self.raw.add(token)))
        pieces = self.pieces.add(token)
        return Delta(pieces, "".join(self.stop.add(self.readable.add(p)) for p in pieces))

    def close(self) -> Delta:
        """What is left when the reply ends without a stop string: held-back bytes and text, a closing `]`."""
        if self.raw is not None:
            return Delta([], self.stop.add(self.raw.flush()) + self.stop.flush(), token=False)
        pieces = self.pieces.flush()
        text = "".join(self.stop.add(self.readable.add(p)) for p in pieces)
        return Delta(pieces, text + self.stop.add(self.readable.close()) + self.stop.flush(), token=False)
