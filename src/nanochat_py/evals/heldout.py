"""Accuracy on the built-in model's own tasks (arithmetic, letters, identity): greedy replies, tools on, each checked
against the held-out problem's answer."""

from __future__ import annotations

from collections.abc import Callable

from ..chatbot import Chatbot
from ..train.tasks import Problem, is_correct

TASKS = ("arithmetic", "letters", "identity")


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
