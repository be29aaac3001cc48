"""Bits per byte: nanochat's tokenizer-independent loss (loss_eval.evaluate_bpb).

The summed next-token loss (in bits) over the summed bytes of the targets. Bytes are counted as nanochat's
tok_train counts them into token_bytes.pt: the UTF-8 length of the token's decoded text (so a token that ends
inside a character counts the 3 bytes of U+FFFD), 0 for special tokens, whose loss is left out as well; targets
of -1 are ignored. Text comes from text files, .jsonl ({"text": ...}) or parquet shards (a `text` column), joined
into one stream (each document after <|bos|>) and cut into rows of the model's context.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import NanochatError
from ..tokenizer import Tokenizer
from ..train.data import TEXT_SUFFIXES, TokenRows, expand, read_documents


def token_bytes(tok: Tokenizer) -> torch.Tensor:
    """int32 [vocab]: the bytes each token stands for, as nanochat counts them; 0 for special tokens."""
    special = tok.special_ids
    return torch.tensor(
        [0 if i in special else len(tok.decode([i]).encode("utf-8")) for i in range(tok.vocab_size)], dtype=torch.int32
    )


@torch.no_grad()
def bits_per_byte(
    model, tok: Tokenizer, rows: TokenRows, batch_size: int = 8, max_rows: int | None = None, procs=None
) -> float:
    """bpb of `rows` (targets with mask 0 ignored); under torchrun each process takes its share of the rows."""
    device = model.device
    rank, world = (procs.rank, procs.world) if procs else (0, 1)
    model.eval()
    lengths = token_bytes(tok).to(device)
    n = len(rows) if max_rows is None else min(max_rows, len(rows))
    mine = torch.arange(rank, n, world)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # nats, bytes
    for start in range(0, len(mine), batch_size):
        inputs, targets = rows.inputs_targets(mine[start : start + batch_size])
        inputs, targets = inputs.to(device), targets.flatten().to(device)
        nats = F.cross_entropy(model(inputs).flatten(0, 1).float(), targets, ignore_index=-1, reduction="none")
        counted = torch.where(targets >= 0, lengths[targets.clamp(min=0)], 0)
        totals += torch.stack([(nats * (counted > 0)).sum().double(), counted.sum().double()])
    nats, nbytes = (procs.sum(totals) if procs else totals).tolist()
    return nats / (math.log(2) * nbytes) if nbytes else float("inf")


def read_texts(paths: list[str | Path]) -> Iterator[str]:
    """Documents from text files and .jsonl (as training reads them) and from parquet shards' `text` column."""
    for path in expand(paths):
        if path.suffix == ".parquet":
            yield from _parquet_texts(path)
        elif path.suffix == ".jsonl" or path.suffix in TEXT_SUFFIXES:
            yield from read_documents([path])
        else:
            raise NanochatError(f"{path}: unsupported text file; use .txt/.md/.rst, .jsonl or .parquet")


def text_rows(tok: Tokenizer, documents: Iterator[str], seq_len: int, max_rows: int | None = None) -> TokenRows:
    """Rows of seq_len + 1 tokens from the documents' stream; reads no more documents than max_rows need."""
    stream: list[int] = []
    needed = None if max_rows is None else max_rows * seq_len + 1
    for doc in documents:
        stream += [tok.bos_token_id, *tok.encoding.encode_ordinary(doc)]
        if needed is not None and len(stream) >= needed:
            break
    if len(stream) < seq_len + 1:
        raise NanochatError(f"the text has {len(stream)} tokens; a row of bpb needs {seq_len + 1}: add text")
    rows = torch.tensor(stream[:needed], dtype=torch.long).unfold(0, seq_len + 1, seq_len).contiguous()
    return TokenRows(rows, torch.ones_like(rows))


def _parquet_texts(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        shard = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a file that is not parquet
        raise NanochatError(f"{path}: not a parquet file ({e})") from None
    if "text" not in shard.schema_arrow.names:
        raise NanochatError(f"{path}: a parquet shard needs a 'text' column (it has {', '.join(shard.schema.names)})")
    for group in range(shard.num_row_groups):  # a row group at a time: shards are large
        for text in shard.read_row_group(group, columns=["text"]).column("text").to_pylist():
            if isinstance(text, str):
                yield text
