"""nanochat's BPE tokenizer on top of tiktoken, read from tokenizer.pkl or a transformers tokenizer.json.

`encode` never turns special-token text typed by a user into special tokens; special tokens only enter a
sequence through the chat renderer (conversation.py) or the engine.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import tiktoken

from . import conversation
from .errors import NanochatError
from .safe_pickle import read_tiktoken_state

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = (
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
)


class Tokenizer:
    def __init__(self, encoding: tiktoken.Encoding, source: str = ""):
        self.encoding = encoding
        self.source = source
        if "<|bos|>" not in encoding._special_tokens:
            raise NanochatError(f"tokenizer {source} has no <|bos|> special token; it is not a nanochat tokenizer")

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_pickle(cls, path: str | Path) -> Tokenizer:
        state = read_tiktoken_state(path)
        return cls(_encoding(path, str(state.get("name", "nanochat")), state["pat_str"], state["mergeable_ranks"],
                             state["special_tokens"]), str(path))  # fmt: skip

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> Tokenizer:
        ranks, specials, pattern = _read_tokenizer_json(Path(path))
        return cls(_encoding(path, "nanochat", pattern, ranks, specials), str(path))

    # --- basics -------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def bos_token_id(self) -> int:
        return self.special("<|bos|>")

    def special(self, name: str) -> int:
        try:
            return self.encoding._special_tokens[name]
        except KeyError:
            raise NanochatError(f"tokenizer {self.source} has no special token {name}") from None

    @property
    def special_ids(self) -> set[int]:
        return set(self.encoding._special_tokens.values())

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids, errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.encoding.decode_bytes(ids)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    # --- chat ---------------------------------------------------------------------------------------------
    def render_conversation(self, conv, max_tokens: int | None = None) -> tuple[list[int], list[int]]:
        return conversation.render_conversation(self, conv, max_tokens)

    def render_for_completion(self, conv) -> list[int]:
        return conversation.render_for_completion(self, conv)


class StreamDecoder:
    """Turns tokens into text as they arrive, holding back bytes until they form whole UTF-8 characters."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def _encoding(path, name: str, pattern: str, ranks: dict[bytes, int], specials: dict[str, int]) -> tiktoken.Encoding:
    try:
        return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    except ValueError as e:  # a split regex that does not compile, no merges, overlapping ids...
        raise NanochatError(f"{path} holds an unusable tokenizer: {e}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """tokenizer.pkl, tokenizer.json, or a directory holding one of them."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("tokenizer.pkl", "tokenizer.json"):
            if (path / name).is_file():
                return load_tokenizer(path / name)
        raise NanochatError(f"no tokenizer.pkl or tokenizer.json in {path}")
    if not path.is_file():
        raise NanochatError(f"tokenizer file {path} does not exist")
    if path.suffix == ".json":
        return Tokenizer.from_tokenizer_json(path)
    return Tokenizer.from_pickle(path)


def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-level alphabet that tokenizer.json files use to spell raw bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _read_tokenizer_json(path: Path) -> tuple[dict[bytes, int], dict[str, int], str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NanochatError(f"cannot read {path} as a tokenizer.json: {e}") from None
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise NanochatError(f"{path}: 'model' must be an object with a 'vocab'; this is not a BPE tokenizer.json")
    if model.get("type") != "BPE":
        raise NanochatError(f"{path} holds a {model.get('type')} tokenizer; nanochat models use byte-level BPE")
    specials = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    decoder = _byte_decoder()
    try:
        ranks = {bytes(decoder[c] for c in token): i for token, i in model["vocab"].items() if token not in specials}
    except KeyError:
        raise NanochatError(
            f"{path} is not a byte-level BPE tokenizer (a vocab entry is not byte-level text)"
        ) from None
    # tiktoken merges by rank; that equals the file's merge list only when merged tokens' ids grow in merge order
    merged_ids = [
        model["vocab"].get("".join(m.split(" ", 1)) if isinstance(m, str) else "".join(m))
        for m in model.get("merges", [])
    ]
    if any(i is None for i in merged_ids) or any(a > b for a, b in zip(merged_ids, merged_ids[1:], strict=False)):
        raise NanochatError(f"{path}: merges are not in token-id order, so it is not a converted nanochat tokenizer")
    return ranks, specials, _split_pattern(data.get("pre_tokenizer")) or SPLIT_PATTERN


def _split_pattern(pre_tokenizer: dict | None) -> str | None:
    """The regex of the first Split pre-tokenizer, if the file names one."""
    if not pre_tokenizer:
        return None
    if pre_tokenizer.get("type") == "Split":
        return pre_tokenizer.get("pattern", {}).get("Regex")
    for child in pre_tokenizer.get("pretokenizers", []) or []:
        found = _split_pattern(child)
        if found:
            return found
    return None
