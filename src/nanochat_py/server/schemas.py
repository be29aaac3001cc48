"""Request bodies, validated by pydantic in strict mode with the limits of nanochat's own server.

Strict: a value of the wrong JSON type is refused, never coerced (`"8"`, `true` or `8.0` are not max_tokens
8); an integer is still a number. Text must be valid Unicode: a lone UTF-16 surrogate (`"\\ud800"`) is
refused. Both APIs share one message model: content is a string, or a list of parts (`text`, and for
assistant turns `python` / `python_output` tool parts, as the web UI sends them back).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

MAX_MESSAGES = 500
MAX_MESSAGE_CHARS = 8000
MAX_TOTAL_CHARS = 32000
MAX_STOPS = 4
MAX_STOP_CHARS = 256
MAX_TOKENS = 4096
MAX_N = 8


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"the text holds a lone surrogate ({text[e.start]!r}) at character {e.start}: send valid UTF-8, "
            "or a complete UTF-16 pair of \\u escapes"
        ) from None
    return text


def text(min_length: int | None = None, max_length: int | None = None):
    """A string of valid Unicode, within these lengths (in characters)."""
    limits = StringConstraints(min_length=min_length, max_length=max_length)
    return Annotated[str, limits, AfterValidator(_valid_unicode)]


Text = text()
STRICT = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class Part(BaseModel):
    model_config = STRICT
    type: Literal["text", "python", "python_output"]
    text: Text


class Message(BaseModel):
    """One chat message. After an optional first `system` message, roles alternate user, assistant, user, ...
    (checked when the prompt is built: a 400 names the message); a last `assistant` message is left out."""

    model_config = STRICT
    role: Literal["system", "user", "assistant"]
    content: text(1, MAX_MESSAGE_CHARS) | list[Part] = Field(
        description=f"1 to {MAX_MESSAGE_CHARS} characters, as a string or as the parts' texts together"
    )

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
    model_config = STRICT
    messages: list[Message] = Field(
        min_length=1, max_length=MAX_MESSAGES, description=f"at most {MAX_TOTAL_CHARS} characters in all"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy")
    top_k: int | None = Field(None, ge=0, le=200, description="0 = off")
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    seed: int | None = Field(None, ge=0, description="the same seed, the same reply (any size; taken modulo 2^63)")

    @model_validator(mode="after")
    def _total_size(self):
        total = sum(m.chars for m in self.messages)
        if total > MAX_TOTAL_CHARS:
            raise ValueError(f"the conversation is {total} characters; the limit is {MAX_TOTAL_CHARS}")
        return self


class NativeChatRequest(_Sampling):
    """POST /chat/completions: nanochat's own streaming API."""


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


Stop = text(1, MAX_STOP_CHARS)


class OpenAIChatRequest(_Sampling):
    """POST /v1/chat/completions: the OpenAI chat API (top_k is an extension)."""

    model: Text | None = None
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = Field(
        None, description=f"up to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters", validate_default=True
    )
    n: int = Field(1, ge=1, le=MAX_N)

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop) -> list[str]:
        return [stop] if isinstance(stop, str) else (stop or [])
