"""Evaluation: bits-per-byte on held-out text, and accuracy on task problems answered with the tools on.

bits-per-byte divides the summed next-token loss (in bits) by the UTF-8 bytes of the targets, so it does
not depend on the tokenizer: special tokens carry no bytes and are left out of both sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..chatbot import Chatbot
from ..tokenizer import Tokenizer
from .data import TokenRows
from .distributed import Processes
from .tasks import Problem, is_correct
from .tokenizer_training import token_bytes


@torch.no_grad()
def bits_per_byte(
    model, tok: Tokenizer, rows: TokenRows, batch_size: int = 8, max_rows: int | None = None, procs=None
) -> float:
    procs = procs or Processes(device=model.lm_head.weight.device)
    model.eval()
    lengths = token_bytes(tok).to(procs.device)
    n = len(rows) if max_rows is None else min(max_rows, len(rows))
    mine = torch.arange(procs.rank, n, procs.world)
    totals = torch.zeros(2, dtype=torch.float64, device=procs.device)  # nats, bytes
    for start in range(0, len(mine), batch_size):
        inputs, targets = rows.inputs_targets(mine[start : start + batch_size])
        inputs, targets = inputs.to(procs.device), targets.to(procs.device)
        logits = model(inputs)
        nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="none")
        counted = lengths[targets.flatten().clamp(min=0)] * (targets.flatten() >= 0)
        totals += torch.stack([(nats * (counted > 0)).sum().double(), counted.sum().double()])
    nats, nbytes = procs.sum(totals).tolist()
    return nats / (math.log(2) * max(nbytes, 1.0))


def answer(bot: Chatbot, question: str, max_tokens: int = 96) -> tuple[str, bool]:
    """The greedy reply's text (tool calls and outputs left out) and whether it called the tool."""
    text, called = [], False
    for piece in bot.reply([{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0.0):
        if piece.kind == "text":
            text.append(piece.text)
        elif piece.kind == "python":
            called = True
    return "".join(text), called


def accuracy(bot: Chatbot, problems: list[Problem], progress: Callable[[], None] | None = None) -> dict:
    """Share of problems answered exactly, share that used the tool, and a few failures to look at."""
    correct = used_tool = 0
    failures = []
    for p in problems:
        reply, called = answer(bot, p.question)
        ok = is_correct(p, reply)
        correct += ok
        used_tool += called
        if not ok and len(failures) < 10:
            failures.append({"question": p.question, "expected": p.answer, "reply": reply})
        if progress:
            progress()
    n = max(1, len(problems))
    return {"n": len(problems), "accuracy": correct / n, "tool_use": used_tool / n, "failures": failures}
