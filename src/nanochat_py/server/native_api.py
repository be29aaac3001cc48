"""POST /chat/completions: nanochat's own streaming API (what its web UI speaks).

SSE events `{"token", "kind", "worker"}` for each piece of the reply, `{"error"}` if generation fails, and
a final `{"done": true}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .context import Context, log, pick
from .job import Delta, Failed
from .openapi import errors, event_stream
from .responses import NativeEvent
from .schemas import NativeChatRequest
from .sse import EventStream, sse


def native_router(ctx: Context) -> APIRouter:
    router = APIRouter(dependencies=[Depends(ctx.require_key)])
    settings = ctx.settings

    @router.post("/chat/completions", response_class=EventStream, status_code=200,
                 responses={200: {"content": {"text/event-stream": event_stream(NativeEvent)},
                                  "description": "the reply as SSE events"}, **errors(400, 413, 503)})  # fmt: skip
    async def native_chat(body: NativeChatRequest):
        max_tokens = pick(body.max_tokens, settings.max_tokens)
        (job,) = await ctx.start_jobs(body, 1, max_tokens, pick(body.seed, settings.seed), stops=[])

        async def stream():
            reply = []
            try:
                async for event in ctx.events(job):
                    if isinstance(event, Delta):
                        for p in event.pieces:
                            reply.append(p.text)
                            yield sse({"token": p.text, "kind": p.kind, "worker": job.worker})
                        continue
                    if isinstance(event, Failed):
                        yield sse({"error": event.message})
                    yield sse({"done": True})
            finally:
                if settings.log_messages:
                    log.info("reply: %s", "".join(reply))

        # on close: a no-op when finished; frees the queue place or the row when the client left
        return EventStream(stream(), on_close=lambda: ctx.cancel([job]))

    return router
