"""CORE's prompts, exactly as nanochat builds them: the few-shot examples it draws, the text it renders for each
task type, the tokens (with <|bos|> first) and the span of each sequence whose tokens are scored.

Multiple choice: one prompt per choice, the same context; the scored span is what follows the common token prefix.
Schema: one prompt per context option, the same continuation; the scored span is the common token suffix.
Language modelling: the context alone and the context with its continuation; the scored span is the difference.
"""

from __future__ import annotations

import random

from ..errors import NanochatError
from ..tokenizer import Tokenizer
from .bundle import CoreTask

Spans = tuple[list[list[int]], list[int], list[int]]  # token sequences, start and end of each scored span


def task_order(task: CoreTask, max_per_task: int | None = None) -> list[int]:
    """The item lines in the order nanochat scores them: shuffled with seed 1337, then the first max_per_task."""
    order = list(range(len(task.items)))
    random.Random(1337).shuffle(order)  # a list of indices shuffles exactly as nanochat's list of items does
    return order[:max_per_task] if max_per_task else order


def fewshot_examples(items: list[dict], position: int, k: int) -> list[dict]:
    """The k examples nanochat shows before the item at `position` of the (shuffled, cut) list: never itself.

    A list cut shorter than k + 1 items (a small --max-per-task) gives all the others; nanochat stops there."""
    if k == 0:
        return []
    others = [i for i in range(len(items)) if i != position]
    return [items[i] for i in random.Random(1234 + position).sample(others, min(k, len(others)))]


def render(task: CoreTask, item: dict, fewshot: list[dict]) -> list[str]:
    """The prompt texts for one item: one per choice / context option, or (lm) without and with the continuation."""
    d = task.delimiter
    if task.kind == "multiple_choice":
        shots = "".join(f"{ex['query']}{d}{ex['choices'][ex['gold']]}\n\n" for ex in fewshot)
        return [f"{shots}{item['query']}{d}{choice}" for choice in item["choices"]]
    if task.kind == "schema":
        shots = "".join(f"{ex['context_options'][ex['gold']]}{d}{ex['continuation']}\n\n" for ex in fewshot)
        return [f"{shots}{option}{d}{item['continuation']}" for option in item["context_options"]]
    # language modelling: contexts are stripped (some datasets carry trailing whitespace), and so is the prompt
    # without the continuation, so that it stays a clean token prefix of the prompt with it
    shots = "".join(f"{str(ex['context']).strip()}{d}{ex['continuation']}\n\n" for ex in fewshot)
    context = f"{shots}{str(item['context']).strip()}{d}"
    return [context.strip(), f"{context}{item['continuation']}"]


def spans(task: CoreTask, tok: Tokenizer, prompts: list[str]) -> Spans:
    """Token each prompt (<|bos|> first) and find the span of each sequence that is scored."""
    tokens = [[tok.bos_token_id, *ids] for ids in tok.encoding.encode_ordinary_batch(prompts)]
    ends = [len(t) for t in tokens]
    if task.kind == "multiple_choice":
        start = _common_length(tokens)
        return tokens, [start] * len(tokens), ends
    if task.kind == "schema":
        suffix = _common_length([t[::-1] for t in tokens])
        return tokens, [e - suffix for e in ends], ends
    without, with_ = tokens
    if not (len(without) < len(with_) and with_[: len(without)] == without):
        raise NanochatError(f"task {task.label}: an item's prompt without its continuation is not a token prefix")
    return [with_], [len(without)], [len(with_)]


def item_spans(task: CoreTask, tok: Tokenizer, items: list[dict], position: int) -> Spans:
    """Everything up to the forward pass for the item at `position` of `items` (the list nanochat scores)."""
    fewshot = fewshot_examples(items, position, task.num_fewshot)
    return spans(task, tok, render(task, items[position], fewshot))


def crop(spans_: Spans, max_len: int) -> Spans:
    """Keep the last max_len tokens of longer sequences and move their spans along (core_eval's cropping)."""
    tokens, starts, ends = spans_
    out: Spans = ([], [], [])
    for t, s, e in zip(tokens, starts, ends, strict=True):
        cut = max(0, len(t) - max_len)
        if s - cut < 0:
            raise NanochatError(f"a scored continuation is longer than {max_len} tokens: it cannot be cropped")
        out[0].append(t[cut:])
        out[1].append(s - cut)
        out[2].append(e - cut)
    return out


def _common_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all sequences share."""
    shortest = min(len(s) for s in sequences)
    for i in range(shortest):
        if any(s[i] != sequences[0][i] for s in sequences):
            return i
    return shortest
