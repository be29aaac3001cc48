"""`nanochat-py train sft`: fine-tune any loadable checkpoint (every generation) on conversations.

Only the assistant's own tokens are trained on; conversations are best-fit packed into rows. The output
is a checkpoint of the source's generation, with the source's tokenizer beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import real, whole
from ..errors import NanochatError
from ..loader import load
from . import distributed
from .data import conversation_rows, is_held_out, mixed_rows, read_conversations, read_documents, text_rows
from .optimizers import LearningRates
from .options import add_loop_options, settings_from
from .trainer import lineage_of, train

# nanochat fine-tunes at a fraction of the pretraining rates
SFT_RATES = LearningRates(matrix=0.004, embedding=0.06, unembedding=0.0008, scalar=0.1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", "-s", required=True, help="any checkpoint nanochat_py.load accepts")
    p.add_argument("--data", nargs="+", required=True, help='.jsonl conversations ({"messages": [...]} or a list)')
    p.add_argument("--seq-len", type=whole(1), default=None, help="row length (default: the model's context)")
    p.add_argument(
        "--text",
        nargs="+",
        default=None,
        help="plain text to mix in (the pretraining text), so the model keeps modelling text",
    )
    p.add_argument(
        "--text-share", type=real(0, 0.95), default=0.0, help="share of training rows taken from --text (0; e.g. 0.25)"
    )
    add_loop_options(p, steps=None, batch_size=8, lr=SFT_RATES)


def run(args: argparse.Namespace) -> Path:
    procs = distributed.start(args.device)
    try:
        bot = load(args.source, device=procs.device, dtype="fp32")
        tok, model = bot.tokenizer, bot.model
        seq_len = min(args.seq_len or model.config.sequence_len, model.config.sequence_len)
        conversations = read_conversations(args.data)
        keys = [repr(c) for c in conversations]
        train_convs = [c for c, k in zip(conversations, keys, strict=True) if not is_held_out(k, args.val_percent)]
        val_convs = [c for c, k in zip(conversations, keys, strict=True) if is_held_out(k, args.val_percent)]
        train_rows = conversation_rows(tok, train_convs, seq_len, args.seed)
        if args.text_share and not args.text:
            raise NanochatError("--text-share needs --text FILES (the text to mix in)")
        if args.text and args.text_share:
            documents = [d for d in read_documents(args.text) if not is_held_out(d, args.val_percent)]
            text = text_rows(tok, documents, seq_len, args.seed)
            train_rows = mixed_rows(train_rows, text, args.text_share, args.seed)
        val_rows = conversation_rows(tok, val_convs, seq_len) if val_convs else None
        settings = settings_from(args, "sft")
        meta = {"source": str(args.source), "lineage": lineage_of(args.source)}
        return train(model, tok, train_rows, val_rows, settings, procs, meta)
    finally:
        distributed.stop(procs)
