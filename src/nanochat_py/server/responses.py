"""What the server answers: the response bodies and SSE events that /openapi.json documents."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None


class ErrorBody(BaseModel):
    """Every error: a 4xx for the client's mistakes, 5xx for the server's."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "loading", "warming up", "unhealthy", "error"]
    ready: bool
    num_workers: int | None = None
    available_workers: int | None = None
    error: str | None = Field(None, description="why the server is not ready")


class WorkerStats(BaseModel):
    id: int
    device: str
    warmed_up: bool
    alive: bool
    stalled: bool
    heartbeat_age_s: float = Field(description="seconds since the worker's loop last made progress")
    active_requests: int
    max_batch: int
    requests_served: int
    tokens_served: int


class Stats(BaseModel):
    total_workers: int
    available_workers: int
    busy_workers: int
    queue_length: int
    max_queue: int
    uptime_s: float
    workers: list[WorkerStats]


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class ReplyMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: ReplyMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """The non-streaming answer; with "stream": true the answer is `chat.completion.chunk` events instead."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


# --- SSE events: the JSON in each `data:` line -------------------------------------------------------------
class TokenEvent(BaseModel):
    token: str
    kind: Literal["text", "python", "python_output"]
    worker: int


class NativeErrorEvent(BaseModel):
    error: str


class DoneEvent(BaseModel):
    done: Literal[True]


class NativeEvent(BaseModel):
    """One event of POST /chat/completions: tokens, then an error if generation failed, then done."""

    event: TokenEvent | NativeErrorEvent | DoneEvent


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None
    logprobs: None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class OpenAIEvent(BaseModel):
    """One event of a streamed /v1/chat/completions: chunks, an error for a choice that failed (that choice
    then has no finish_reason), then `[DONE]` (not JSON)."""

    event: ChatCompletionChunk | ErrorBody
