"""POST /v1/completions: OpenAI's legacy completions, what lm-evaluation-harness's `local-completions` speaks.

A prompt is text (encoded after <|bos|>, see tokenizer_api.encode_text) or token ids (taken as they are), one or
a list of them; each gets `n` choices, numbered prompt * n + sample. The completion is the model's raw text:
no calculator, special tokens by name. With `echo` the prompt's text comes first (a <|bos|> the server put in
front is context, not echoed), and with `logprobs` too each prompt token's log-probability (`max_tokens: 0`
scores the prompt alone: how the harness asks for log-likelihoods).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request

from ..tokenizer import Tokenizer
from .context import Context, log, pick
from .errors import ApiError
from .job import Delta, Failed, Finished, Job, PromptLogprobs, TokenLogprob
from .logprobs import CompletionLogprobs, decoded
from .openapi import errors, event_stream
from .responses import Completion, CompletionEvent
from .schemas import CompletionRequest
from .sse import ChoiceStreams, EventStream, Put, sse
from .tokenizer_api import check_ids, encode_text


@dataclass
class Prompt:
    tokens: list[int]  # what the model reads
    shown: int  # the first token echoed (1 when the server put <|bos|> in front)
    text: str  # the echoed text


def completions_router(ctx: Context) -> APIRouter:
    router = APIRouter(dependencies=[Depends(ctx.require_key)])
    settings = ctx.settings

    @router.post("/v1/completions", response_model=None,
                 responses={200: {"model": Completion,
                                  "content": {"text/event-stream": event_stream(CompletionEvent, "[DONE]")},
                                  "description": "text_completion, or text_completion events with stream"},
                            **errors(400, 413, 500, 503)})  # fmt: skip
    async def completions(body: CompletionRequest, request: Request):
        problem = body.problem()
        if problem:
            raise ApiError(400, problem[1], param=problem[0])
        ctx.check_ready()
        max_tokens = pick(body.max_tokens, settings.max_tokens)
        bot = ctx.pool.bot
        prompts = await asyncio.to_thread(_prompts, bot.tokenizer, body.prompts, bot.config.sequence_len, max_tokens)
        if settings.log_messages:
            log.info("completion prompts: %s", [p.text for p in prompts])
        scored = body.logprobs if body.echo else None
        seed = pick(body.seed, settings.seed)
        jobs = ctx.queue([ctx.new_job(body, p.tokens, max_tokens, seed, j, body.stop, logprobs=body.logprobs,
                                      prompt_logprobs=scored, raw=True)
                          for p in prompts for j in range(body.n)])  # fmt: skip
        shape = _Shape(ctx, body, [p for p in prompts for _ in range(body.n)])
        if body.stream:
            return EventStream(shape.stream(jobs), on_close=lambda: ctx.cancel(jobs))
        watcher = asyncio.create_task(ctx.cancel_on_disconnect(request, jobs))
        try:
            results = await asyncio.gather(*(_collect(ctx, job) for job in jobs))
        finally:
            watcher.cancel()
            ctx.cancel(jobs)
        failed = [r for r in results if isinstance(r, Failed)]
        if failed:
            raise ApiError(failed[0].status, failed[0].message, "server_error")
        if settings.log_messages:
            log.info("completion: %s", results[0].text)
        # tokens to strings for every prompt position (thousands with echo): off the event loop
        choices = await asyncio.to_thread(lambda: [shape.choice(i, r) for i, r in enumerate(results)])
        return {**shape.header(), "choices": choices,
                "usage": _usage(prompts, sum(r.end.completion_tokens for r in results))}  # fmt: skip

    return router


def _prompts(tokenizer: Tokenizer, given: list[str | list[int]], context: int, max_tokens: int) -> list[Prompt]:
    """Each prompt's tokens, checked against the vocabulary and the context (which must leave room for one new
    token unless max_tokens is 0)."""
    prompts = []
    for i, p in enumerate(given):
        param = "prompt" if len(given) == 1 else f"prompt.{i}"
        if isinstance(p, str):
            tokens, added = encode_text(tokenizer, p)
        else:
            check_ids(tokenizer, p, param)
            tokens, added = p, False
        room = context - (1 if max_tokens else 0)
        if len(tokens) > room:
            raise ApiError(400, f"{param}: the prompt has {len(tokens)} tokens; the model's context is {context}"
                           + (" and the completion needs room for one token at least" if max_tokens else ""),
                           param=param)  # fmt: skip
        prompts.append(Prompt(tokens, int(added), decoded(tokenizer, tokens[int(added) :])))
    return prompts


@dataclass
class _Result:
    text: str
    end: Finished
    entries: list[TokenLogprob]
    prompt_entries: list[TokenLogprob | None]


async def _collect(ctx: Context, job: Job) -> _Result | Failed:
    text, entries, prompt_entries = [], [], []
    async for event in ctx.events(job):
        if isinstance(event, PromptLogprobs):
            prompt_entries = event.entries
        elif isinstance(event, Delta):
            text.append(event.text)
            if event.logprob is not None:
                entries.append(event.logprob)
        elif isinstance(event, Failed):
            return event
        else:
            return _Result("".join(text), event, entries, prompt_entries)


class _Shape:
    """OpenAI's text_completion objects for one request; choice i comes from prompts[i]."""

    def __init__(self, ctx: Context, body: CompletionRequest, prompts: list[Prompt]):
        self.ctx, self.body, self.prompts = ctx, body, prompts
        self.tokenizer = ctx.pool.bot.tokenizer
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def header(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.ctx.settings.model_name}  # fmt: skip

    def echoed(self, i: int, entries: list[TokenLogprob | None]) -> tuple[str, dict | None]:
        """The echoed prompt's text and logprobs ("" and None without echo)."""
        if not self.body.echo:
            return "", None
        p = self.prompts[i]
        if self.body.logprobs is None:
            return p.text, None
        return p.text, CompletionLogprobs(self.tokenizer).add(p.tokens[p.shown :], entries[p.shown :])

    def completion_logprobs(self, i: int) -> CompletionLogprobs:
        """Offsets of the completion's tokens continue after the echoed text."""
        return CompletionLogprobs(self.tokenizer, len(self.prompts[i].text) if self.body.echo else 0)

    def choice(self, i: int, r: _Result) -> dict:
        prompt_text, logprobs = self.echoed(i, r.prompt_entries)
        if self.body.logprobs is not None:
            generated = self.completion_logprobs(i).add([e.token for e in r.entries], r.entries)
            logprobs = _joined(logprobs, generated)
        return {"index": i, "text": prompt_text + r.text, "logprobs": logprobs, "finish_reason": _reason(r.end)}

    async def stream(self, jobs: list[Job]):
        """text_completion events of every choice as they come, then usage (if asked) and [DONE]. A choice that
        fails sends an error event and no finish_reason."""

        def chunk(i: int, text: str, logprobs: dict | None = None, finish: str | None = None) -> str:
            return sse({**self.header(), "choices": [{"index": i, "text": text, "logprobs": logprobs,
                                                      "finish_reason": finish}]})  # fmt: skip

        async def pump(i: int, job: Job, put: Put) -> None:
            scored = self.body.echo and self.body.logprobs is not None
            if self.body.echo and not scored:  # with logprobs, the echo waits for the prompt's logprobs
                await put(chunk(i, *self.echoed(i, [])))
            generated = self.completion_logprobs(i)
            async for event in self.ctx.events(job):
                if isinstance(event, PromptLogprobs) and scored:
                    await put(chunk(i, *await asyncio.to_thread(self.echoed, i, event.entries)))
                elif isinstance(event, Delta):
                    if event.logprob is not None:
                        await put(chunk(i, event.text, generated.add([event.logprob.token], [event.logprob])))
                    elif event.text:
                        await put(chunk(i, event.text))
                elif isinstance(event, Failed):
                    await put(sse({"error": {"message": event.message, "type": "server_error", "param": None}}))
                    await put(0)
                elif isinstance(event, Finished):
                    await put(chunk(i, "", finish=_reason(event)))
                    await put(event.completion_tokens)

        async with ChoiceStreams(jobs, pump) as streams:
            async for item in streams.events():
                yield item
            if self.body.stream_options and self.body.stream_options.include_usage:
                unique = self.prompts[:: self.body.n]
                yield sse({**self.header(), "choices": [], "usage": _usage(unique, streams.completion_tokens)})
            yield sse("[DONE]")


def _joined(first: dict | None, second: dict) -> dict:
    return second if first is None else {key: first[key] + second[key] for key in first}


def _reason(end: Finished) -> str:
    return "stop" if end.reason == "cancelled" else end.reason


def _usage(prompts: list[Prompt], completion_tokens: int) -> dict:
    """Each prompt counts once, however many choices it has (as OpenAI counts)."""
    prompt = sum(len(p.tokens) for p in prompts)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}
