"""What every route shares: the settings, the worker pool, the metrics, and turning a request into jobs."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from ..errors import NanochatError
from ..sampling import Penalties
from .errors import ApiError
from .job import Delta, Failed, Finished, Job, PromptLogprobs
from .job_queue import QueueFull
from .metrics import Metrics
from .pool import WorkerPool

log = logging.getLogger("nanochat_py.server")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class Settings:
    temperature: float = 0.6
    top_k: int = 50
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES  # Host names answered ("*": any); see serve.host_policy
    allow_ip_hosts: bool = False  # also answer any IP address literal (servers bound beyond loopback)
    ui_path: Path | None = None
    logo_path: Path | None = None
    log_messages: bool = False
    model_name: str = "nanochat"


def pick(value, default):
    return default if value is None else value


class Context:
    def __init__(self, pool: WorkerPool, settings: Settings, metrics: Metrics):
        self.pool, self.settings, self.metrics = pool, settings, metrics

    def require_key(self, request: Request) -> None:
        """A FastAPI dependency for the API routes when --api-key is set."""
        if not self.settings.api_key:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self.settings.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "authentication_error")

    def check_ready(self) -> None:
        """503 unless the workers can take jobs."""
        if not self.pool.ready:
            raise ApiError(
                503, "the model is still loading; retry shortly", "server_error", headers={"Retry-After": "2"}
            )
        if not self.pool.accepting:
            raise ApiError(503, "no worker is running: the server needs a restart", "server_error")

    async def start_jobs(self, body, n: int, max_tokens: int, seed: int | None, stops: list[str],
                         **options) -> list[Job]:  # fmt: skip
        """Queue `n` jobs for one chat request (seeds seed, seed + 1, ...); all of them or none (503)."""
        self.check_ready()
        try:
            messages = [m.as_dict() for m in body.messages]
            # rendering and tokenizing up to 32,000 characters takes milliseconds: not on the event loop
            prompt = await asyncio.to_thread(self.pool.bot.prompt_for, messages, max_tokens)
        except (NanochatError, ValueError) as e:
            raise ApiError(400, str(e), "invalid_request_error", "messages") from None
        if self.settings.log_messages:
            log.info("request messages: %s", json.dumps(messages, ensure_ascii=False))
        return self.queue([self.new_job(body, prompt, max_tokens, seed, i, stops, **options) for i in range(n)])

    def new_job(self, body, prompt: list[int], max_tokens: int, seed: int | None, index: int, stops: list[str],
                **options) -> Job:  # fmt: skip
        """A job with the request's sampling controls, the server's defaults for those it left out, and the
        seed of its `index`-th sample."""
        settings = self.settings
        penalties = Penalties(pick(body.repetition_penalty, settings.repetition_penalty),
                              pick(body.presence_penalty, settings.presence_penalty),
                              pick(body.frequency_penalty, settings.frequency_penalty))  # fmt: skip
        return Job(prompt, max_tokens, pick(body.temperature, settings.temperature), pick(body.top_k, settings.top_k),
                   pick(body.top_p, settings.top_p), None if seed is None else (seed + index) % 2**63,
                   asyncio.get_running_loop(), stops, min_p=pick(body.min_p, settings.min_p), penalties=penalties,
                   **options)  # fmt: skip

    def queue(self, jobs: list[Job]) -> list[Job]:
        """Queue all of the request's jobs, or none (503)."""
        queued = []
        try:
            for job in jobs:
                self.pool.submit(job)
                queued.append(job)
        except QueueFull:
            self.cancel(queued)  # a refused request leaves no work behind
            raise ApiError(503, "the server is busy: too many requests are waiting; retry shortly", "server_error",
                           headers={"Retry-After": "1"}) from None  # fmt: skip
        return jobs

    def cancel(self, jobs: list[Job]) -> None:
        """The request is over (or its client left): free queue places and rows. A no-op for finished jobs."""
        for job in jobs:
            self.pool.cancel(job)

    async def cancel_on_disconnect(self, request: Request, jobs: list[Job]) -> None:
        """Non-streaming requests: stop generating as soon as the client has gone away (a decode step of a
        small model takes well under a millisecond, so look often)."""
        while not await request.is_disconnected():
            await asyncio.sleep(0.01)
        self.cancel(jobs)

    async def events(self, job: Job) -> AsyncIterator[Delta | PromptLogprobs | Finished | Failed]:
        """The job's events up to and including its end, with the end counted in the metrics."""
        while True:
            event = await job.events.get()
            if isinstance(event, Finished):
                self.metrics.observe_job(job, event)
                if job.first_token_at:
                    self.metrics.observe_speed(event.completion_tokens, time.monotonic() - job.first_token_at)
            yield event
            if isinstance(event, (Finished, Failed)):
                return
