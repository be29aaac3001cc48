"""The built-in model's own tasks (arithmetic, letters, identity, honesty), scored strictly on held-out problems.

A reply counts as right only when all of these hold, greedy, tools on:
- its text has the answer (arithmetic, letters: its last number; identity: the name; honesty: it says it does
  not know or cannot);
- it made the right tool call — the user's own numbers and operation, or the user's word and letter — and for
  honesty no call at all (it must not invent arithmetic for a question that has none);
- it ended by itself, with its end-of-turn token, well before MAX_TOKENS (no held-out reply needs a tenth);
- it does not loop: no run of four words comes back more than MAX_REPEATS times.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..chatbot import Chatbot, PieceDecoder
from ..train.tasks import TASKS, Problem, is_correct, same_call

__all__ = ["TASKS", "MAX_TOKENS", "answer", "accuracy"]
MAX_TOKENS = 128
MAX_REPEATS = 3


@dataclass
class Reply:
    text: str  # what the user reads, tool calls and their outputs left out
    calls: list[str] = field(default_factory=list)  # each calculator call the model wrote
    ended: bool = False  # stopped with its end-of-turn token (not cut at MAX_TOKENS or the context's end)
    tokens: int = 0


def answer(bot: Chatbot, messages: list[dict], max_tokens: int = MAX_TOKENS) -> Reply:
    """The greedy reply to a conversation, with its tool calls and whether it ended by itself."""
    tokens, ended = [], False
    prompt = bot.prompt_for(messages, reserve=max_tokens)
    for step in bot.engine.generate(prompt, 1, max_tokens, temperature=0.0):
        if step.done[0]:
            ended = True
            break
        tokens.append(step.tokens[0])
    return read_reply(bot.tokenizer, tokens, ended)


def read_reply(tokenizer, tokens: list[int], ended: bool) -> Reply:
    """A reply's tokens as the judge sees them: the text the user reads, and each calculator call."""
    reply, decoder, kind = Reply("", ended=ended, tokens=len(tokens)), PieceDecoder(tokenizer), "text"
    for piece in [p for t in tokens for p in decoder.add(t)] + decoder.flush():
        if piece.kind == "python":
            if kind != "python":
                reply.calls.append("")
            reply.calls[-1] += piece.text
        elif piece.kind == "text":
            reply.text += piece.text
        kind = piece.kind
    return reply


def repeats(text: str) -> int:
    """How often the most frequent run of four words occurs in `text` (1 when nothing repeats)."""
    words = re.findall(r"\S+", text.lower())
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    return max(grams.values(), default=1)


def judge(problem: Problem, reply: Reply) -> dict:
    """Each criterion for one reply (see the module's docstring)."""
    if problem.call is not None:
        call_ok = any(same_call(problem.call, c) for c in reply.calls)
    else:
        call_ok = not reply.calls if problem.task == "honesty" else True
    checks = {
        "answer": is_correct(problem, reply.text),
        "call": call_ok,
        "ended": reply.ended,
        "no_loop": repeats(reply.text) <= MAX_REPEATS,
    }
    return {**checks, "right": all(checks.values())}


def accuracy(bot: Chatbot, problems: list[Problem], progress: Callable[[], None] | None = None) -> dict:
    """Share of problems answered right (every criterion), the share meeting each criterion, the longest
    reply, and a few failures to look at."""
    totals: Counter = Counter()
    failures, longest = [], 0
    for problem in problems:
        reply = answer(bot, problem.messages())
        verdict = judge(problem, reply)
        totals.update(k for k, ok in verdict.items() if ok)
        longest = max(longest, reply.tokens)
        if not verdict["right"] and len(failures) < 10:
            failures.append({"question": problem.question, "expected": problem.answer, "call": problem.call,
                             "reply": reply.text, "calls": reply.calls, "ended": reply.ended})  # fmt: skip
        if progress:
            progress()
    n = max(1, len(problems))
    return {
        "n": len(problems),
        "accuracy": totals["right"] / n,
        "answer_accuracy": totals["answer"] / n,
        "right_call": totals["call"] / n,
        "runaway": 1 - totals["ended"] / n,
        "looping": 1 - totals["no_loop"] / n,
        "longest_reply_tokens": longest,
        "failures": failures,
    }
