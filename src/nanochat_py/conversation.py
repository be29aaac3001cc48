"""nanochat's chat format: a conversation -> token ids, plus the mask of tokens the assistant is trained on.

    <|bos|> <|user_start|> text <|user_end|> <|assistant_start|> text / tool parts <|assistant_end|> ...

A leading system message is merged into the first user message; after it, roles alternate user/assistant.
Assistant content is a string or a list of parts: `text`, `python` (a tool call) and `python_output`
(the tool's answer, which the model did not write and so is masked out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConversationError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

PART_TYPES = ("text", "python", "python_output")


def messages_of(conv) -> list[dict]:
    """Accept a list of messages or nanochat's {"messages": [...]} and return the (validated) list."""
    messages = conv.get("messages") if isinstance(conv, dict) else conv
    if not isinstance(messages, list) or not messages:
        raise ConversationError("a conversation is a non-empty list of {'role', 'content'} messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ConversationError(f"message {i} must be an object with 'role' and 'content'")
    return messages


def merge_system(messages: list[dict]) -> list[dict]:
    """Fold a leading system message into the first user message, as nanochat does; check the roles."""
    original = messages
    if messages[0]["role"] == "system":
        if len(messages) < 2 or messages[1]["role"] != "user":
            raise ConversationError("a system message must be followed by a user message")
        system = _text_of(messages[0], 0)
        first = {"role": "user", "content": system + "\n\n" + _text_of(messages[1], 1)}
        messages = [first, *messages[2:]]
    offset = len(original) - len(messages)  # report indexes as the caller numbered them
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise ConversationError(
                f"message {i + offset} has role {m['role']!r} but should be {expected!r}: after an optional system "
                "message, roles must alternate user, assistant, user, ..."
            )
    return messages


def render_conversation(tok: Tokenizer, conv, max_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the conversation and a mask that is 1 where the assistant's own tokens are."""
    original = messages_of(conv)
    messages = merge_system(original)
    offset = len(original) - len(messages)
    ids, mask = [tok.bos_token_id], [0]

    def add(token_ids: list[int], value: int) -> None:
        ids.extend(token_ids)
        mask.extend([value] * len(token_ids))

    for i, message in enumerate(messages):
        if message["role"] == "user":
            text = tok.encode(_text_of(message, i + offset))
            add([tok.special("<|user_start|>"), *text, tok.special("<|user_end|>")], 0)
            continue
        add([tok.special("<|assistant_start|>")], 0)
        for part in _parts_of(message, i + offset):
            text_ids = tok.encode(part["text"])
            if part["type"] == "text":
                add(text_ids, 1)
            elif part["type"] == "python":
                add([tok.special("<|python_start|>"), *text_ids, tok.special("<|python_end|>")], 1)
            else:  # python_output came from the tool, not the model: never trained on
                add([tok.special("<|output_start|>"), *text_ids, tok.special("<|output_end|>")], 0)
        add([tok.special("<|assistant_end|>")], 1)
    if max_tokens is not None:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_for_completion(tok: Tokenizer, conv) -> list[int]:
    """The prompt for the assistant's next reply: drop a final assistant message, end with <|assistant_start|>."""
    messages = messages_of(conv)
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise ConversationError("the conversation must end with a user message for the assistant to answer")
    ids, _ = render_conversation(tok, messages)
    return [*ids, tok.special("<|assistant_start|>")]


def _text_of(message: dict, index: int) -> str:
    """User/system content: a string, or OpenAI-style text parts joined together."""
    content = message["content"]
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise ConversationError(f"message {index} ({message['role']}): content must be a string or a list of text parts")


def _parts_of(message: dict, index: int) -> list[dict]:
    content = message["content"]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ConversationError(f"message {index} (assistant): content must be a string or a list of parts")
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES or not isinstance(part.get("text"), str):
            raise ConversationError(
                f"message {index} (assistant): each part must be {{'type': one of {PART_TYPES}, 'text': str}}, "
                f"got {part!r}"
            )
    return content
