"""`nanochat-py train data`: write the generated SFT conversations and the held-out problem sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .tasks import conversations, problems, read_words


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="directory for conversations.jsonl and heldout/")
    p.add_argument("--words", required=True, help="word list for the letter tasks (e.g. /usr/share/dict/words)")
    p.add_argument("--conversations", type=int, default=20000, help="training conversations (20000)")
    p.add_argument("--heldout", type=int, default=200, help="held-out problems per task (200)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> Path:
    words = read_words(args.words)
    args.out.mkdir(parents=True, exist_ok=True)
    train_path = args.out / "conversations.jsonl"
    _write_jsonl(train_path, conversations(args.conversations, words, args.seed))
    for task in ("arithmetic", "letters", "identity"):
        held = problems(task, args.heldout, words, seed=args.seed + 1)
        _write_jsonl(args.out / "heldout" / f"{task}.jsonl", [p.to_dict() for p in held])
    print(f"wrote {args.conversations} conversations to {train_path} and held-out problems to {args.out}/heldout")
    return train_path


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
