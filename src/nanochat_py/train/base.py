"""`nanochat-py train base`: pretrain a fresh model of the given depth on text files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import whole
from ..tokenizer import load_tokenizer
from . import distributed
from .data import is_held_out, read_documents, text_rows
from .depth import config_for_depth, new_model
from .optimizers import LearningRates
from .options import add_loop_options, settings_from
from .trainer import train


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=whole(1), required=True, help="layers; width, heads and LRs follow from it")
    p.add_argument("--data", nargs="+", required=True, help="text files, .jsonl {'text'} files or directories")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer.pkl (or its directory)")
    p.add_argument("--seq-len", type=whole(1), default=2048, help="context length (2048)")
    add_loop_options(p, steps=None, batch_size=8, lr=LearningRates())


def run(args: argparse.Namespace) -> Path:
    procs = distributed.start(args.device)
    try:
        tok = load_tokenizer(args.tokenizer)
        documents = list(read_documents(args.data))
        train_docs = [d for d in documents if not is_held_out(d, args.val_percent)]
        val_docs = [d for d in documents if is_held_out(d, args.val_percent)]
        train_rows = text_rows(tok, train_docs, args.seq_len, args.seed)
        val_rows = text_rows(tok, val_docs, args.seq_len) if val_docs else None
        config = config_for_depth(args.depth, tok.vocab_size, args.seq_len)
        model = new_model(config, args.seed, procs.device)
        settings = settings_from(args, "base")
        return train(model, tok, train_rows, val_rows, settings, procs, {"data": [str(d) for d in args.data]})
    finally:
        distributed.stop(procs)
