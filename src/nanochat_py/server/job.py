"""A generation job: what a request asks a worker to generate, and the events it sends back.

Workers run in threads; the HTTP handler waits on an asyncio queue. Events cross over with
`loop.call_soon_threadsafe`, so the worker never blocks on a slow client. The worker also turns tokens into
text (see reply.py), so handlers only format events. The queue holds at most max_tokens + 2 events (one per
token, a last piece of text, then the end), so it is bounded by the request itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ..chatbot import Piece


@dataclass
class Delta:
    """The text one token added: `pieces` for the native API, `text` (readable, stop strings applied) for the
    OpenAI API. `token` is False for text that comes with the end of the reply rather than with a new token."""

    pieces: list[Piece]
    text: str
    token: bool = True


@dataclass
class Finished:
    reason: str  # "stop" (stop token or stop string), "length" (max_tokens or context full), "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    message: str
    status: int = 500  # 503 when the server is shutting down or has no worker left


@dataclass
class Job:
    prompt: list[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int | None
    loop: asyncio.AbstractEventLoop
    stops: list[str] = field(default_factory=list)  # OpenAI stop strings: the worker ends the reply at one
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set by the HTTP side when the client goes away; the worker frees the slot
    worker: int = -1
    created: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    def send(self, event: Delta | Finished | Failed) -> None:
        """Called from a worker thread."""
        if isinstance(event, Delta) and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass
