"""CORE (the DCLM paper's metric, as nanochat computes it) for base models: every task of the eval bundle scored by
continuation, accuracy centred on the task's random baseline, CORE = the mean of the centred accuracies.

One forward pass per item holds all of its choices (right-padded with <|bos|>), as nanochat's core_eval does, so
every item comes out as it does there. Multiple choice and schema: the choice whose scored tokens have the lowest
mean cross-entropy wins. Language modelling: correct when greedy prediction reproduces every continuation token.
Prompts longer than the model's context run whole, as nanochat runs its own models (its GPT has no max_seq_len,
so core_eval never crops them); `max_seq_len` crops them to their last tokens as core_eval does for models that
declare one (GPT-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..chatbot import Chatbot
from .bundle import CoreTask
from .prompts import Spans, crop, item_spans, task_order
from .scores import TaskScore


@dataclass
class ItemResult:
    line: int  # the item's line in its jsonl, from 0
    correct: bool
    mean_losses: list[float] | None = None  # per choice (multiple choice, schema); nan for an empty span
    matched: int | None = None  # continuation tokens predicted right (language modelling)


@dataclass
class TaskResult:
    score: TaskScore
    items: list[ItemResult] = field(default_factory=list)  # in the order nanochat scores them


@dataclass
class CoreResult:
    tasks: list[TaskResult]

    @property
    def core(self) -> float:
        return sum(t.score.centered for t in self.tasks) / len(self.tasks)

    def to_dict(self) -> dict:
        return {"core": self.core, "tasks": {t.score.task: t.score.to_dict() for t in self.tasks}}


def evaluate_core(
    bot: Chatbot,
    tasks: list[CoreTask],
    max_per_task: int | None = None,
    max_seq_len: int | None = None,
    progress: bool = False,
) -> CoreResult:
    """Score every task; max_per_task takes the first N of nanochat's shuffled order (few-shot drawn among them)."""
    return CoreResult([evaluate_task(bot, t, max_per_task, max_seq_len, progress) for t in tasks])


def evaluate_task(
    bot: Chatbot, task: CoreTask, max_per_task: int | None = None, max_seq_len: int | None = None, progress=False
) -> TaskResult:
    lines = task_order(task, max_per_task)
    items = [task.items[i] for i in lines]
    results = []
    for position in tqdm(range(len(items)), desc=task.label, unit="item", disable=not progress, leave=False):
        spans = item_spans(task, bot.tokenizer, items, position)
        if max_seq_len is not None:
            spans = crop(spans, max_seq_len)
        results.append(score_item(bot, task, spans, items[position], lines[position]))
    accuracy = sum(r.correct for r in results) / len(results)
    return TaskResult(TaskScore(task.label, accuracy, len(results), task.random_baseline), results)


@torch.no_grad()
def score_item(bot: Chatbot, task: CoreTask, spans: Spans, item: dict, line: int) -> ItemResult:
    tokens, starts, ends = spans
    ids = torch.full((len(tokens), max(map(len, tokens))), bot.tokenizer.bos_token_id, dtype=torch.long)
    for row, t in enumerate(tokens):
        ids[row, : len(t)] = torch.tensor(t, dtype=torch.long)
    ids = ids.to(bot.device)
    logits = bot.model(ids).float()
    targets = torch.roll(ids, shifts=-1, dims=1)  # position t predicts token t + 1
    if task.kind == "language_modeling":
        s, e = starts[0], ends[0]
        predicted = logits[0, s - 1 : e - 1].argmax(dim=-1)
        matched = predicted == targets[0, s - 1 : e - 1]
        return ItemResult(line, bool(matched.all()), matched=int(matched.sum()))
    # the loss of only the scored positions: each row's softmax is its own, so this is what the full one gives there
    mean_losses = [
        F.cross_entropy(logits[row, s - 1 : e - 1], targets[row, s - 1 : e - 1], reduction="none").mean().item()
        for row, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]
    # min() and index() as nanochat uses them: a nan (an empty span) wins only when it comes first
    choice = mean_losses.index(min(mean_losses))
    return ItemResult(line, choice == item["gold"], mean_losses=mean_losses)
