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


class TopLogprob(BaseModel):
    token: str = Field(description="the token's text, or `bytes:\\xNN...` for part of a UTF-8 character")
    logprob: float = Field(description="under the model's own distribution, before any sampling control")
    bytes: list[int]


class TokenLogprobs(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(description="the most likely tokens at this position, best first")


class ChatLogprobs(BaseModel):
    """One item per token of the reply (with `logprobs: true`), a stop string's tokens included."""

    content: list[TokenLogprobs]
    refusal: None


class Choice(BaseModel):
    index: int
    message: ReplyMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChatLogprobs | None


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
    logprobs: ChatLogprobs | None


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


# --- legacy completions -------------------------------------------------------------------------------------
class CompletionLogprobs(BaseModel):
    """One entry per token: the echoed prompt's, then the completion's (a stop string's tokens included)."""

    tokens: list[str] = Field(description="each token's text, or `bytes:\\xNN...` for part of a UTF-8 character")
    token_logprobs: list[float | None] = Field(description="None for a first token, which has no context")
    top_logprobs: list[dict[str, float] | None] = Field(
        description="the `logprobs` most likely tokens at each position, and the chosen one"
    )
    text_offset: list[int] = Field(description="where each token's text starts in `text`")


class CompletionChoice(BaseModel):
    index: int = Field(description="prompt number times n, plus the sample number")
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None = Field(description="None until a streamed choice ends")


class Completion(BaseModel):
    """The non-streaming answer; with "stream": true, `text_completion` events with the pieces instead."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionEvent(BaseModel):
    """One event of a streamed /v1/completions: pieces of each choice (their logprobs with them), an error for
    a choice that failed (it then has no finish_reason), the usage if asked (no choices), then `[DONE]`."""

    event: Completion | ErrorBody


# --- tokenization (vLLM's routes, which lm-evaluation-harness looks for) ---------------------------------------
class Tokens(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: None = None


class Detokenized(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    tokenizer_class: str
    bos_token: str
    eos_token: str = Field(description="<|bos|>: nanochat starts each document with it, so it ends the one before")
    model_max_length: int
    vocab_size: int
