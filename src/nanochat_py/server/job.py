"""A generation job: what a request asks a worker to generate, and the events it sends back.

Workers run in threads; the HTTP handler waits on an asyncio queue. Events cross over with
`loop.call_soon_threadsafe`, so the worker never blocks on a slow client. The queue holds at most
max_tokens + 2 events (one per token, then the end), so it is bounded by the request itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Token:
    id: int
    forced: bool  # inserted by the engine (calculator output), not sampled


@dataclass
class Finished:
    reason: str  # "stop" (stop token), "length" (max_tokens or context full), "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    message: str


@dataclass
class Job:
    prompt: list[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set by the HTTP side when the client goes away; the worker frees the slot
    worker: int = -1
    created: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    def send(self, event: Token | Finished | Failed) -> None:
        """Called from a worker thread."""
        if isinstance(event, Token) and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)
