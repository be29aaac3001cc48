"""tokenizer.json and tokenizer_config.json for a nanochat tokenizer: what AutoTokenizer, vLLM and SGLang read.

tokenizer.json is the `tokenizers` library's byte-level BPE, written here as plain JSON (no `tokenizers` needed to
export). It encodes exactly as nanochat's tiktoken encoding does: the same split regex; every token spelled in
the GPT-2 byte alphabet; and as merges, every way of cutting a token into two tokens, ranked by the token's own
rank. tiktoken merges whichever adjacent pair forms the lowest-ranked token, and so does a BPE with those merges.
"""

from __future__ import annotations

import json
from importlib import resources

from ..tokenizer import Tokenizer

_ADDED_TOKEN = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
CHAT_TEMPLATE = resources.files(__package__).joinpath("chat_template.jinja").read_text(encoding="utf-8")


def byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of every byte: printable Latin-1 bytes stand for themselves, the rest are
    mapped in order onto code points from 256 (the inverse of tokenizer.py's _byte_decoder)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tokenizer_json(tokenizer: Tokenizer) -> dict:
    encoding = tokenizer.encoding
    ranks: dict[bytes, int] = encoding._mergeable_ranks
    alphabet = byte_alphabet()

    def spell(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    merges = sorted(
        (rank, ranks[token[:i]], ranks[token[i:]], spell(token[:i]), spell(token[i:]))
        for token, rank in ranks.items()
        for i in range(1, len(token))
        if token[:i] in ranks and token[i:] in ranks
    )
    specials = sorted(encoding._special_tokens.items(), key=lambda item: item[1])
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [dict(_ADDED_TOKEN, id=i, content=name) for name, i in specials],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": encoding._pat_str}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,  # no <|bos|> added by encode: nanochat's prompts and the chat template place it
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,  # a whole piece that is a token is that token, as in tiktoken
            "vocab": {spell(token): rank for token, rank in ranks.items()},
            "merges": [[left, right] for *_, left, right in merges],
        },
    }


def tokenizer_config(tokenizer: Tokenizer, context: int) -> dict:
    """`<|assistant_end|>` ends a reply (eos); `<|bos|>` pads, being never a training target after position 0."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|assistant_end|>",
        "pad_token": "<|bos|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        "chat_template": CHAT_TEMPLATE,
    }


def write_json(path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
