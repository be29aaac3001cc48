"""The OpenAI API: POST /v1/chat/completions (streaming or not, n choices, stop strings, logprobs), GET /v1/models
and GET /v1/models/{id}. The worker has already turned tokens into readable text and applied the stop strings;
this only shapes it as OpenAI's objects. (Legacy completions: completions_api.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Depends, Path, Request

from .context import Context, log, pick
from .errors import ApiError
from .job import Delta, Failed, Finished, Job, TokenLogprob
from .logprobs import chat_content
from .openapi import errors, event_stream
from .responses import ChatCompletion, Model, ModelList, OpenAIEvent
from .schemas import OpenAIChatRequest
from .sse import ChoiceStreams, EventStream, Put, sse


def openai_router(ctx: Context) -> APIRouter:
    router = APIRouter(dependencies=[Depends(ctx.require_key)])
    settings = ctx.settings
    model = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "nanochat-py"}

    @router.get("/v1/models", response_model=ModelList)
    async def models():
        return {"object": "list", "data": [model]}

    @router.get("/v1/models/{model_id:path}", response_model=Model, responses=errors(404))
    async def retrieve_model(model_id: str = Path(json_schema_extra={"enum": [settings.model_name]})):
        if model_id != settings.model_name:
            raise ApiError(404, f"no model {model_id!r}: this server serves {settings.model_name!r}", param="model")
        return model

    @router.post("/v1/chat/completions", response_model=None,
                 responses={200: {"model": ChatCompletion,
                                  "content": {"text/event-stream": event_stream(OpenAIEvent, "[DONE]")},
                                  "description": "chat.completion, or chat.completion.chunk events with stream"},
                            **errors(400, 413, 500, 503)})  # fmt: skip
    async def openai_chat(body: OpenAIChatRequest, request: Request):
        max_tokens = pick(body.max_completion_tokens or body.max_tokens, settings.max_tokens)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        jobs = await ctx.start_jobs(body, body.n, max_tokens, pick(body.seed, settings.seed), body.stop,
                                    logprobs=logprobs)  # fmt: skip
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            stream = _stream(ctx, jobs, body, completion_id, created)
            return EventStream(stream, on_close=lambda: ctx.cancel(jobs))
        watcher = asyncio.create_task(ctx.cancel_on_disconnect(request, jobs))
        try:
            results = await asyncio.gather(*(_collect(ctx, job) for job in jobs))
        finally:
            watcher.cancel()
            ctx.cancel(jobs)
        failed = [r for r in results if isinstance(r, Failed)]
        if failed:
            raise ApiError(failed[0].status, failed[0].message, "server_error")
        usage = _usage(jobs, sum(end.completion_tokens for _, end, _ in results))
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": _reason(end),
                    "logprobs": _logprobs(ctx, entries) if body.logprobs else None}
                   for i, (text, end, entries) in enumerate(results)]  # fmt: skip
        if settings.log_messages:
            log.info("reply: %s", results[0][0])
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": settings.model_name,
                "choices": choices, "usage": usage}  # fmt: skip

    return router


async def _collect(ctx: Context, job: Job) -> tuple[str, Finished, list[TokenLogprob]] | Failed:
    text, entries = [], []
    async for event in ctx.events(job):
        if isinstance(event, Delta):
            text.append(event.text)
            if event.logprob is not None:
                entries.append(event.logprob)
        elif isinstance(event, Failed):
            return event
        elif isinstance(event, Finished):
            return "".join(text), event, entries


def _logprobs(ctx: Context, entries: list[TokenLogprob]) -> dict:
    return {"content": chat_content(ctx.pool.bot.tokenizer, entries), "refusal": None}


async def _stream(ctx: Context, jobs: list[Job], body: OpenAIChatRequest, completion_id: str, created: int):
    """chat.completion.chunk events of every choice as they come, then usage (if asked) and [DONE]. A choice
    that fails sends an error event and no finish_reason."""

    def chunk(index: int, delta: dict, finish=None, usage=None, logprob: TokenLogprob | None = None) -> str:
        logprobs = _logprobs(ctx, [logprob]) if logprob is not None else None
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": ctx.settings.model_name, "choices": [] if usage else
                [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}  # fmt: skip
        if usage:
            data["usage"] = usage
        return sse(data)

    async def pump(i: int, job: Job, put: Put) -> None:
        await put(chunk(i, {"role": "assistant", "content": ""}))
        async for event in ctx.events(job):
            if isinstance(event, Delta):
                if event.text or event.logprob is not None:
                    await put(chunk(i, {"content": event.text}, logprob=event.logprob))
            elif isinstance(event, Failed):
                await put(sse({"error": {"message": event.message, "type": "server_error", "param": None}}))
                await put(0)
            elif isinstance(event, Finished):
                await put(chunk(i, {}, _reason(event)))
                await put(event.completion_tokens)

    async with ChoiceStreams(jobs, pump) as streams:
        async for item in streams.events():
            yield item
        if body.stream_options and body.stream_options.include_usage:
            yield chunk(0, {}, usage=_usage(jobs, streams.completion_tokens))
        yield sse("[DONE]")


def _reason(end: Finished) -> str:
    return "stop" if end.reason == "cancelled" else end.reason


def _usage(jobs: list[Job], completion_tokens: int) -> dict:
    prompt = len(jobs[0].prompt)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}
