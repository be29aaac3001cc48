"""The FastAPI app: web UI, health/stats/metrics, nanochat's streaming API and the OpenAI chat API.

Nothing here runs the model: requests become Jobs for the worker pool, and their token events become
SSE streams or JSON. Prompts and replies are never logged unless the server was started with
--log-messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..chatbot import PieceDecoder, ReadableText
from ..errors import NanochatError
from .job import Failed, Finished, Job, Token
from .metrics import Metrics
from .pool import QueueFull, WorkerPool
from .schemas import NativeChatRequest, OpenAIChatRequest
from .stops import StopMatcher

log = logging.getLogger("nanochat_py.server")
STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 1_000_000


@dataclass
class Settings:
    temperature: float = 0.6
    top_k: int = 50
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    ui_path: Path | None = None
    logo_path: Path | None = None
    log_messages: bool = False
    model_name: str = "nanochat"


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param=None, headers=None):
        self.status, self.message, self.type, self.param, self.headers = status, message, type_, param, headers


def error_response(status: int, message: str, type_: str, param=None, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(pool: WorkerPool, settings: Settings) -> FastAPI:
    app = FastAPI(title="nanochat-py", docs_url=None, redoc_url=None)
    metrics = Metrics(pool)
    app.state.pool, app.state.settings, app.state.metrics = pool, settings, metrics
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])  # fmt: skip
    app.add_middleware(_BodyLimit)
    app.add_middleware(_CountRequests, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return error_response(e.status, e.message, e.type, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":  # loc holds a character offset, not a parameter
            return error_response(400, f"malformed JSON: {first.get('msg')}", "invalid_request_error")
        param = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error_response(400, f"{param}: {message}" if param else message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), "invalid_request_error")

    def require_key(request: Request) -> None:
        if not settings.api_key:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "authentication_error")

    # --- pages and status ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(settings.ui_path or STATIC / "index.html", media_type="text/html")

    @app.get("/logo.svg", include_in_schema=False)
    async def logo():
        return FileResponse(settings.logo_path or STATIC / "logo.svg", media_type="image/svg+xml")

    @app.get("/health")
    async def health():
        if pool.ready:
            stats = pool.stats()
            return {"status": "ok", "ready": True, "num_workers": stats["total_workers"],
                    "available_workers": stats["available_workers"]}  # fmt: skip
        if pool.error:
            return JSONResponse({"status": "error", "ready": False, "error": pool.error}, status_code=503)
        return JSONResponse({"status": "loading", "ready": False}, status_code=503)

    @app.get("/stats")
    async def stats():
        return pool.stats()

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "nanochat-py"}]}  # fmt: skip

    # --- generation ---------------------------------------------------------------------------------------
    def start_job(body, max_tokens: int, seed: int | None) -> Job:
        if not pool.ready:
            raise ApiError(
                503, "the model is still loading; retry shortly", "server_error", headers={"Retry-After": "2"}
            )
        try:
            messages = [m.as_dict() for m in body.messages]
            prompt = pool.bot.prompt_for(messages, reserve=max_tokens)
        except (NanochatError, ValueError) as e:
            raise ApiError(400, str(e), "invalid_request_error", "messages") from None
        if settings.log_messages:
            log.info("request messages: %s", json.dumps(messages, ensure_ascii=False))
        job = Job(prompt, max_tokens, _pick(body.temperature, settings.temperature), _pick(body.top_k, settings.top_k),
                  _pick(body.top_p, settings.top_p), seed, asyncio.get_running_loop())  # fmt: skip
        try:
            pool.submit(job)
        except QueueFull:
            raise ApiError(503, "the server is busy: too many requests are waiting; retry shortly", "server_error",
                           headers={"Retry-After": "1"}) from None  # fmt: skip
        return job

    async def pieces_of(job: Job):
        """(pieces, None) for each token event, then (final pieces, Finished | Failed)."""
        decoder = PieceDecoder(pool.bot.tokenizer)
        while True:
            event = await job.events.get()
            if isinstance(event, Token):
                yield decoder.add(event.id), None
            else:
                if isinstance(event, Finished):
                    metrics.observe_job(job, event)
                    if job.first_token_at:
                        metrics.observe_speed(event.completion_tokens, time.monotonic() - job.first_token_at)
                yield decoder.flush(), event
                return

    @app.post("/chat/completions", dependencies=[Depends(require_key)])
    async def native_chat(body: NativeChatRequest):
        job = start_job(body, _pick(body.max_tokens, settings.max_tokens), _pick(body.seed, settings.seed))

        async def stream():
            reply = []
            try:
                async for pieces, end in pieces_of(job):
                    for p in pieces:
                        reply.append(p.text)
                        yield sse({"token": p.text, "kind": p.kind, "worker": job.worker})
                    if isinstance(end, Failed):
                        yield sse({"error": end.message})
                    if end is not None:
                        yield sse({"done": True})
            finally:
                job.cancelled = True  # a no-op when finished; frees the row when the client went away
                if settings.log_messages:
                    log.info("reply: %s", "".join(reply))

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def openai_chat(body: OpenAIChatRequest, request: Request):
        max_tokens = _pick(body.max_completion_tokens or body.max_tokens, settings.max_tokens)
        seed = _pick(body.seed, settings.seed)
        jobs: list[Job] = []
        try:
            for i in range(body.n):
                jobs.append(start_job(body, max_tokens, None if seed is None else (seed + i) % 2**63))
        except ApiError:
            for job in jobs:  # a refused request leaves no work behind
                job.cancelled = True
            raise
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return StreamingResponse(_openai_stream(jobs, body, completion_id, created), media_type="text/event-stream")
        watcher = asyncio.create_task(_cancel_on_disconnect(request, jobs))
        try:
            results = await asyncio.gather(*(_collect(job, body.stop) for job in jobs))
        finally:
            watcher.cancel()
            for job in jobs:
                job.cancelled = True
        for _, _, error in results:
            if error:
                raise ApiError(500, error, "server_error")
        usage = _usage(jobs, sum(r[1].completion_tokens for r in results))
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason.reason,
                    "logprobs": None} for i, (text, reason, _) in enumerate(results)]  # fmt: skip
        if settings.log_messages:
            log.info("reply: %s", results[0][0])
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": settings.model_name,
                "choices": choices, "usage": usage}  # fmt: skip

    def stopped_by_string(job: Job, generated: int) -> Finished:
        """A reply cut by an OpenAI stop string: stop the job and account for it as if it had finished."""
        job.cancelled = True
        end = Finished("stop", len(job.prompt), generated)
        metrics.observe_job(job, end)
        return end

    async def openai_text(job: Job, stops: list[str]):
        """(text delta, None) per token, then (last delta, Finished | Failed): tool calls made readable,
        OpenAI stop strings applied."""
        text, stop, generated = ReadableText(), StopMatcher(stops), 0
        async for pieces, end in pieces_of(job):
            generated += end is None
            delta = "".join(stop.add(text.add(p)) for p in pieces)
            if stop.stopped:
                yield delta, stopped_by_string(job, generated)
                return
            if end is not None:
                delta += stop.add(text.close()) + stop.flush()
            yield delta, end

    async def _collect(job: Job, stops: list[str]) -> tuple[str, Finished, str | None]:
        out = []
        async for delta, end in openai_text(job, stops):
            out.append(delta)
            if isinstance(end, Failed):
                return "".join(out), Finished("stop", len(job.prompt), 0), end.message
            if end is not None:
                return "".join(out), end, None

    async def _openai_stream(jobs: list[Job], body: OpenAIChatRequest, completion_id: str, created: int):
        def chunk(index: int, delta: dict, finish=None, usage=None) -> str:
            data = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": settings.model_name, "choices": [] if usage else
                    [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}  # fmt: skip
            if usage:
                data["usage"] = usage
            return sse(data)

        merged: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, job: Job):
            await merged.put(chunk(i, {"role": "assistant", "content": ""}))
            async for delta, end in openai_text(job, body.stop):
                if delta:
                    await merged.put(chunk(i, {"content": delta}))
                if isinstance(end, Failed):
                    await merged.put(sse({"error": {"message": end.message, "type": "server_error"}}))
                    end = Finished("stop", len(job.prompt), 0)
                if end is not None:
                    await merged.put(chunk(i, {}, end.reason if end.reason != "cancelled" else "stop"))
                    await merged.put(end.completion_tokens)
                    return

        tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
        try:
            finished, completion_tokens = 0, 0
            while finished < len(jobs):
                item = await merged.get()
                if isinstance(item, int):
                    finished, completion_tokens = finished + 1, completion_tokens + item
                else:
                    yield item
            if body.stream_options and body.stream_options.include_usage:
                yield chunk(0, {}, usage=_usage(jobs, completion_tokens))
            yield sse("[DONE]")
        finally:
            for job in jobs:
                job.cancelled = True
            for t in tasks:
                t.cancel()

    return app


async def _cancel_on_disconnect(request: Request, jobs: list[Job]) -> None:
    """Non-streaming requests: stop generating as soon as the client has gone away (a decode step of a
    small model takes well under a millisecond, so look often)."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.01)
    for job in jobs:
        job.cancelled = True


def _usage(jobs: list[Job], completion_tokens: int) -> dict:
    prompt = len(jobs[0].prompt)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _pick(value, default):
    return default if value is None else value


class _CountRequests:
    """Count requests by route and status. Plain ASGI (not BaseHTTPMiddleware), so handlers still see
    http.disconnect and can stop generating for a client that has gone away."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe_request(getattr(scope.get("route"), "path", "unmatched"), status)


class _BodyLimit:
    """Refuse request bodies over MAX_BODY_BYTES with a 413 JSON error, whether declared or streamed.

    The body (at most 1 MB) is read here and handed on, so a chunked upload is measured before any of it
    reaches the app.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return await _too_large(scope, receive, send)
        if declared is not None:
            return await self.app(scope, receive, send)  # the server enforces the declared length
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message], receive), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY_BYTES:
                return await _too_large(scope, receive, send)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _replay(messages: list[dict], receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


async def _too_large(scope, receive, send):
    response = error_response(413, f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error")
    await response(scope, receive, send)
