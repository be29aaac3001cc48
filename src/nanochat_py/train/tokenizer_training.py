"""Train a nanochat tokenizer with rustbpe: the nanochat split pattern, byte-level BPE, nanochat's special tokens.

Writes what nanochat writes: tokenizer.pkl (a pickled tiktoken Encoding, which the reference can also read)
and token_bytes.pt (the UTF-8 length of every token, 0 for special tokens) used for bits-per-byte.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import rustbpe
import tiktoken
import torch

from ..arguments import whole
from ..checkpoint import write_atomically
from ..tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # every byte, then the special tokens


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_chars: int | None = None) -> Tokenizer:
    """BPE over `texts` (at most `max_chars` characters of them); `vocab_size` counts the special tokens too."""
    merges = vocab_size - len(SPECIAL_TOKENS)
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + special tokens)")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(_capped(texts, max_chars), merges, pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in bpe.get_mergeable_ranks()}
    specials = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding(name="nanochat", pat_str=bpe.get_pattern(), mergeable_ranks=ranks,
                                 special_tokens=specials)  # fmt: skip
    return Tokenizer(encoding, "trained")


def token_bytes(tok: Tokenizer) -> torch.Tensor:
    """int32 [vocab]: how many bytes each token stands for; special tokens count 0 (they are not text)."""
    special = tok.special_ids
    lengths = [0 if i in special else len(tok.encoding.decode_single_token_bytes(i)) for i in range(tok.vocab_size)]
    return torch.tensor(lengths, dtype=torch.int32)


def save_tokenizer(tok: Tokenizer, out_dir: str | Path) -> Path:
    """tokenizer.pkl (a pickled tiktoken Encoding, as nanochat writes it) + token_bytes.pt, each written whole."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "tokenizer.pkl", lambda tmp: tmp.write_bytes(pickle.dumps(tok.encoding)))
    write_atomically(out / "token_bytes.pt", lambda tmp: torch.save(token_bytes(tok), tmp))
    return out / "tokenizer.pkl"


def _capped(texts: Iterable[str], max_chars: int | None) -> Iterator[str]:
    seen = 0
    for text in texts:
        if max_chars is not None and seen + len(text) > max_chars:
            if max_chars - seen > 0:
                yield text[: max_chars - seen]
            return
        seen += len(text)
        yield text


def add_arguments(p) -> None:
    p.add_argument("--input", nargs="+", required=True, help="text files, .jsonl {'text'} files or directories")
    p.add_argument("--vocab-size", type=whole(MIN_VOCAB_SIZE, why=" (256 bytes + 9 special tokens)"), required=True,
                   help=f"tokens in all, special tokens included (at least {MIN_VOCAB_SIZE})")  # fmt: skip
    p.add_argument("--max-chars", type=whole(1), default=None, help="train on at most this many characters")
    p.add_argument("--out", required=True, type=Path, help="directory for tokenizer.pkl and token_bytes.pt")


def run(args) -> Path:
    from .data import read_documents

    tok = train_tokenizer(read_documents(args.input), args.vocab_size, args.max_chars)
    path = save_tokenizer(tok, args.out)
    print(f"wrote {path} ({tok.vocab_size} tokens) and {args.out / 'token_bytes.pt'}")
    return path
