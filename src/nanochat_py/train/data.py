"""Training data as rows of token ids: text for pretraining, conversations for SFT.

Both end up as a `TokenRows`: N rows of T+1 tokens plus a mask of which next-token targets count. Which
rows make up batch k is a pure function of (k, seed), so a resumed run sees exactly the data it would have
seen, and each torchrun process reads its own rows of every global batch.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch

from ..conversation import messages_of
from ..errors import NanochatError
from ..tokenizer import Tokenizer

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text", ""}


class TokenRows:
    """rows [N, T+1] of token ids and mask [N, T+1]: target t (= rows[:, t+1]) counts where mask[:, t+1] is 1."""

    def __init__(self, rows: torch.Tensor, mask: torch.Tensor, seed: int = 0):
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise NanochatError("not enough data for a single training row; add data or lower --seq-len")
        self.rows, self.mask, self.seed = rows, mask, seed
        self._order: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def seq_len(self) -> int:
        return self.rows.shape[1] - 1

    def batch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number `index` (rows index*B .. index*B+B-1 of an endless, per-epoch shuffled sequence)."""
        picks = [self._row_at(index * batch_size + b) for b in range(batch_size)]
        return self.inputs_targets(torch.tensor(picks))

    def inputs_targets(self, picks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, mask = self.rows[picks], self.mask[picks]
        targets = rows[:, 1:].masked_fill(mask[:, 1:] == 0, -1)
        return rows[:, :-1], targets

    def _row_at(self, i: int) -> int:
        epoch, offset = divmod(i, len(self))
        if epoch not in self._order:
            self._order = {epoch: torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed + epoch))}
        return int(self._order[epoch][offset])


# --- text --------------------------------------------------------------------------------------------------


def read_documents(paths: list[str | Path]) -> Iterator[str]:
    """Documents from text files (one per file) and .jsonl files (one per line: {"text": ...})."""
    for path in expand(paths):
        if path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise NanochatError(f"{path}:{n}: a text .jsonl line must be an object with a 'text' string")
                    yield record["text"]
        elif path.suffix in TEXT_SUFFIXES:
            yield path.read_text(encoding="utf-8", errors="replace")
        else:
            raise NanochatError(f"{path}: unsupported data file; use plain text (.txt/.md/.rst) or .jsonl")


def expand(paths: list[str | Path]) -> list[Path]:
    """Files named directly, plus every file under named directories (sorted, so runs are repeatable)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise NanochatError(f"data path {p} does not exist")
    if not files:
        raise NanochatError(f"no data files in {', '.join(map(str, paths))}")
    return files


def is_held_out(document: str, percent: float) -> bool:
    """A stable train/validation split by content: the same document always lands on the same side."""
    return zlib.crc32(document.encode("utf-8", "replace")) % 10_000 < percent * 100


def text_rows(tok: Tokenizer, documents: list[str], seq_len: int, seed: int = 0) -> TokenRows:
    """Documents joined into one stream (each starts with <|bos|>), cut into rows of seq_len + 1 tokens."""
    stream: list[int] = []
    for ids in tok.encoding.encode_ordinary_batch(documents):
        stream.append(tok.bos_token_id)
        stream.extend(ids)
    stream_t = torch.tensor(stream, dtype=torch.long)
    if stream_t.numel() < seq_len + 1:
        raise NanochatError(f"the text has {stream_t.numel()} tokens; a row needs {seq_len + 1}: add data")
    rows = stream_t.unfold(0, seq_len + 1, seq_len).contiguous()
    return TokenRows(rows, torch.ones_like(rows), seed)


# --- conversations -----------------------------------------------------------------------------------------


def read_conversations(paths: list[str | Path]) -> list[list[dict]]:
    """.jsonl conversations: nanochat's {"messages": [...]} (with tool parts) or a bare OpenAI-style list."""
    conversations = []
    for path in expand(paths):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                conversations.append(messages_of(json.loads(line)))
            except (json.JSONDecodeError, NanochatError) as e:
                raise NanochatError(f"{path}:{n}: not a conversation ({e})") from None
    return conversations


def conversation_rows(tok: Tokenizer, conversations: list, seq_len: int, seed: int = 0) -> TokenRows:
    """Best-fit packing: each conversation goes into the open row with the least room that still fits it;
    leftover room is <|bos|> padding that is never trained on. Only assistant tokens are targets."""
    rendered = [tok.render_conversation(c, max_tokens=seq_len + 1) for c in conversations]
    random.Random(seed).shuffle(rendered)
    width = seq_len + 1
    rows: list[tuple[list[int], list[int]]] = []
    by_room: list[list[int]] = [[] for _ in range(width + 1)]  # open rows, bucketed by how much room is left
    for ids, mask in sorted(rendered, key=lambda r: -len(r[0])):  # longest first packs tightest
        room = next((r for r in range(len(ids), width + 1) if by_room[r]), None)
        if room is None:
            rows.append(([], []))
            row, room = len(rows) - 1, width
        else:
            row = by_room[room].pop()
        rows[row][0].extend(ids)
        rows[row][1].extend(mask)
        by_room[room - len(ids)].append(row)
    pad = tok.bos_token_id
    ids_t = torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in rows], dtype=torch.long)
    mask_t = torch.tensor([r[1] + [0] * (width - len(r[1])) for r in rows], dtype=torch.long)
    return TokenRows(ids_t, mask_t, seed)


def mixed_rows(conversations: TokenRows, text: TokenRows, share: float, seed: int = 0) -> TokenRows:
    """Conversation rows plus plain-text rows making up `share` of the whole (0 <= share < 1), all trained on.

    Fine-tuning on conversations alone makes a small model forget how to model text (the built-in model's
    held-out bits per byte went from 1.21 to 4.10); a share of the pretraining text keeps it."""
    if not 0 <= share < 1:
        raise NanochatError(f"--text-share must be at least 0 and below 1, not {share}")
    if conversations.seq_len != text.seq_len:
        raise NanochatError("text and conversation rows must have the same length")
    wanted = round(share / (1 - share) * len(conversations))
    order = torch.randperm(len(text), generator=torch.Generator().manual_seed(seed))
    picks = order.repeat(-(-wanted // len(text)))[:wanted]  # cycles through the text if it is short
    rows = torch.cat([conversations.rows, text.rows[picks]])
    mask = torch.cat([conversations.mask, text.mask[picks]])
    return TokenRows(rows, mask, seed)
