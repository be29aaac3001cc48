"""Server-Sent Events: the `data:` line format, and a streaming response that always lets go of its jobs."""

from __future__ import annotations

import json
from collections.abc import Callable

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
