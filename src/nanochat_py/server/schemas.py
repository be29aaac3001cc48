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
MAX_TOP_LOGPROBS = 20  # chat's top_logprobs, as OpenAI's
MAX_LOGPROBS = 5  # legacy completions' logprobs, as OpenAI's
MAX_PROMPTS = 32  # prompts in one completions request
MAX_CHOICES = 32  # prompts times n
MAX_DETOKENIZE = 65536  # token ids in one /detokenize request


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


class _Controls(BaseModel):
    """The sampling controls every generating route takes (defaults: the server's flags)."""

    model_config = STRICT
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy")
    top_k: int | None = Field(None, ge=0, le=200, description="0 = off")
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1, description="drop tokens below min_p times the top one's probability")
    repetition_penalty: float | None = Field(
        None,
        gt=0,
        le=2,
        description="CTRL's: a token already in the text has its logit divided by this if "
        "positive, multiplied by it if negative; 1 = off",
    )
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="OpenAI's: off the logit of a token "
                                           "already in the reply")  # fmt: skip
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="OpenAI's: off the logit of a token, "
                                            "times how often it is in the reply")  # fmt: skip
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    seed: int | None = Field(None, ge=0, description="the same seed, the same reply (any size; taken modulo 2^63)")


class _Sampling(_Controls):
    messages: list[Message] = Field(
        min_length=1, max_length=MAX_MESSAGES, description=f"at most {MAX_TOTAL_CHARS} characters in all"
    )

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
    logprobs: bool = Field(False, description="each reply token's log-probability under the model")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="and that many most likely "
                                     "tokens at each position (needs logprobs: true)")  # fmt: skip

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop) -> list[str]:
        return _stop_list(stop)

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


def _stop_list(stop) -> list[str]:
    return [stop] if isinstance(stop, str) else (stop or [])


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_Controls):
    """POST /v1/completions: OpenAI's legacy completions (top_k, min_p, repetition_penalty are extensions)."""

    model: Text | None = None
    prompt: (
        text(0, MAX_TOTAL_CHARS)
        | Annotated[list[text(0, MAX_TOTAL_CHARS)], Field(min_length=1, max_length=MAX_PROMPTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    ) = Field(
        description=f"a string (encoded after <|bos|>, special tokens by name), up to {MAX_PROMPTS} strings, "
        f"token ids (taken as they are), or up to {MAX_PROMPTS} lists of token ids; {MAX_TOTAL_CHARS} characters "
        "at most per string, and each prompt within the model's context"
    )
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS, description="0 only with echo: score the prompt")
    echo: bool = Field(False, description="the prompt comes back before the completion (with its logprobs)")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="each token's log-probability under the "
                                 "model, and that many most likely tokens at each position")  # fmt: skip
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = Field(
        None, description=f"up to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters", validate_default=True
    )
    n: int = Field(1, ge=1, le=MAX_N, description=f"completions per prompt; prompts times n at most {MAX_CHOICES}")

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop) -> list[str]:
        return _stop_list(stop)

    def problem(self) -> tuple[str, str] | None:
        """(parameter, message) for what the field types cannot say, else None."""
        if self.max_tokens == 0 and not self.echo:
            return "max_tokens", "max_tokens: 0 asks for no completion, which makes sense only with echo: true"
        if len(self.prompts) * self.n > MAX_CHOICES:
            return "n", f"n: {len(self.prompts)} prompts times n={self.n} is more than {MAX_CHOICES} choices"
        return None

    @property
    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list: strings or lists of token ids."""
        p = self.prompt
        return [p] if isinstance(p, str) or isinstance(p[0], int) else list(p)


class TokenizeRequest(BaseModel):
    """POST /tokenize (vLLM's route): text -> the token ids /v1/completions would use for it."""

    model_config = STRICT
    model: Text | None = None
    prompt: text(0, MAX_TOTAL_CHARS) = Field(description="special tokens are recognised by name")
    add_special_tokens: bool = Field(True, description="start with <|bos|> (unless the text already does)")


class DetokenizeRequest(BaseModel):
    """POST /detokenize (vLLM's route): token ids -> their text, special tokens by name."""

    model_config = STRICT
    model: Text | None = None
    tokens: list[Annotated[int, Field(ge=0)]] = Field(max_length=MAX_DETOKENIZE)
