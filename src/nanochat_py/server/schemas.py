"""Request bodies, validated by pydantic with the limits of nanochat's own server.

Both APIs share one message model: content is a string, or a list of parts (`text`, and for assistant
turns `python` / `python_output` tool parts, as the web UI sends them back).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_MESSAGES = 500
MAX_MESSAGE_CHARS = 8000
MAX_TOTAL_CHARS = 32000


class Part(BaseModel):
    type: Literal["text", "python", "python_output"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[Part]

    @property
    def chars(self) -> int:
        return len(self.content) if isinstance(self.content, str) else sum(len(p.text) for p in self.content)

    @field_validator("content")
    @classmethod
    def _size(cls, content):
        chars = len(content) if isinstance(content, str) else sum(len(p.text) for p in content)
        if chars == 0:
            raise ValueError("message content must not be empty")
        if chars > MAX_MESSAGE_CHARS:
            raise ValueError(f"message content is {chars} characters; the limit is {MAX_MESSAGE_CHARS}")
        return content

    def as_dict(self) -> dict:
        content = self.content if isinstance(self.content, str) else [p.model_dump() for p in self.content]
        if self.role != "assistant" and not isinstance(content, str):
            if any(p["type"] != "text" for p in content):
                raise ValueError(f"{self.role} messages may only hold text parts")
            content = "".join(p["text"] for p in content)
        return {"role": self.role, "content": content}


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: float | None = Field(None, ge=0, le=2)
    top_k: int | None = Field(None, ge=0, le=200)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _total_size(self):
        total = sum(m.chars for m in self.messages)
        if total > MAX_TOTAL_CHARS:
            raise ValueError(f"the conversation is {total} characters; the limit is {MAX_TOTAL_CHARS}")
        return self


class NativeChatRequest(_Sampling):
    """POST /chat/completions: nanochat's own streaming API."""


class StreamOptions(BaseModel):
    include_usage: bool = False


class OpenAIChatRequest(_Sampling):
    """POST /v1/chat/completions: the OpenAI chat API (top_k is an extension)."""

    model: str | None = None
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=8)

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops
