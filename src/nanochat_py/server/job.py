"""A generation job: what a request asks a worker to generate, and the events it sends back.

Workers run in threads; the HTTP handler waits on an asyncio queue. Events cross over with
`loop.call_soon_threadsafe`, so the worker never blocks on a slow client. The worker also turns tokens into
text (see reply.py), so handlers only format events. The queue holds at most max_tokens + 3 events (the
prompt's logprobs if asked, one per token, a last piece of text, then the end), so it is bounded by the
request itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ..chatbot import Piece
from ..sampling import Penalties


@dataclass
class TokenLogprob:
    """A token's log-probability under the model (its raw distribution, float32) and the `top` most likely
    tokens at its position, best first: [(token id, logprob), ...]."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Delta:
    """The text one token added: `pieces` for the native API, `text` (readable, stop strings applied) for the
    OpenAI API. `token` is False for text that comes with the end of the reply rather than with a new token."""

    pieces: list[Piece]
    text: str
    token: bool = True
    logprob: TokenLogprob | None = None  # the token's, when the job asks for logprobs


@dataclass
class PromptLogprobs:
    """Sent once, before any Delta, by a job that asks for its prompt's logprobs: one entry per prompt token (the
    first has no context, so None)."""

    entries: list[TokenLogprob | None]


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
    min_p: float = 0.0
    penalties: Penalties = field(default_factory=Penalties)
    logprobs: int | None = None  # send each token's logprob and this many top alternatives
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (a PromptLogprobs event)
    raw: bool = False  # a plain completion: no calculator, the text decoded as it is (special tokens by name)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set by the HTTP side when the client goes away; the worker frees the slot
    worker: int = -1
    created: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    def send(self, event: Delta | PromptLogprobs | Finished | Failed) -> None:
        """Called from a worker thread."""
        if isinstance(event, Delta) and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass
