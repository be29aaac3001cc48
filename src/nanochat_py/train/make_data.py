"""`nanochat-py train data`: write the generated SFT conversations and the held-out problem sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..arguments import whole
from ..errors import NanochatError
from .tasks import TASKS, conversations, problems, read_words

WORDS = "/usr/share/dict/words"  # Debian's wamerican


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="directory for conversations.jsonl and heldout/")
    p.add_argument("--words", default=WORDS, help=f"word list for the letter tasks, one word per line ({WORDS})")
    p.add_argument("--conversations", type=whole(1), default=20000, help="training conversations (20000)")
    p.add_argument(
        "--heldout", type=whole(1), default=200, help="held-out problems per task, asked in held-out phrasings (200)"
    )
    p.add_argument("--seed", type=whole(0), default=0)


def run(args: argparse.Namespace) -> Path:
    if not Path(args.words).is_file():
        raise NanochatError(
            f"no word list at {args.words}: install Debian's wamerican (apt-get install wamerican), "
            "or pass --words FILE (any list of English words, one per line)"
        )
    words = read_words(args.words)
    if not words:
        raise NanochatError(f"{args.words} has no lower-case words of 3-12 letters; pass an English word list")
    args.out.mkdir(parents=True, exist_ok=True)
    train_path = args.out / "conversations.jsonl"
    _write_jsonl(train_path, conversations(args.conversations, words, args.seed))
    for task in TASKS:
        held = problems(task, args.heldout, words, seed=args.seed + 1)
        _write_jsonl(args.out / "heldout" / f"{task}.jsonl", [p.to_dict() for p in held])
    print(f"wrote {args.conversations} conversations to {train_path} and held-out problems to {args.out}/heldout")
    return train_path


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
