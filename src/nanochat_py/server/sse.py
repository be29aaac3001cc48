"""Server-Sent Events: the `data:` line format, a streaming response that always lets go of its jobs, and the
merge of several choices' streams into one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class EventStream(StreamingResponse):
    """An SSE response that calls `on_close` however it ends: finished, failed, or its client gone, even
    before the stream's generator ever started (then the generator's own `finally` would never run)."""

    media_type = "text/event-stream"

    def __init__(self, content, on_close: Callable[[], None]):
        super().__init__(content, headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


# a choice's pump puts SSE text, then an int: the choice has ended, with this many completion tokens
Put = Callable[[str | int], Awaitable[None]]


class ChoiceStreams:
    """The events of several choices as they come. Inside `async with`, `pump(i, job, put)` runs for every job
    at once; `events()` yields what they put until every choice has ended, and `completion_tokens` is then
    their total. Leaving the block however it ends (the client gone) cancels the pumps at once."""

    def __init__(self, jobs: list, pump: Callable[[int, object, Put], Awaitable[None]]):
        self.jobs, self.pump = jobs, pump
        self.completion_tokens = 0
        self.merged: asyncio.Queue = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> ChoiceStreams:
        self.tasks = [asyncio.create_task(self.pump(i, job, self.merged.put)) for i, job in enumerate(self.jobs)]
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self.tasks:
            t.cancel()

    async def events(self) -> AsyncIterator[str]:
        finished = 0
        while finished < len(self.jobs):
            item = await self.merged.get()
            if isinstance(item, int):
                finished, self.completion_tokens = finished + 1, self.completion_tokens + item
            else:
                yield item
