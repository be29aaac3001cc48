"""report.md: the report card nanochat's report.py wrote (as of 1076f97, before f10bd75 removed it), for one checkpoint.

Its sections list every score as `- name: value` (floats to 4 decimals), and its summary table has one row per
metric (CORE first, ChatCORE last, the rest alphabetical) and a column per stage (BASE, SFT, RL); this checkpoint's
scores sit in the column of its stage, the other columns hold "-".
"""

from __future__ import annotations

import datetime
import os
import platform

import torch

from .. import __version__

STAGES = ("base", "sft", "rl")
METRIC_WIDTH, VALUE_WIDTH = 15, 8


def report_card(result: dict) -> str:
    """The markdown of one eval run (the dict eval.json holds)."""
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    parts = [_header(result, now)]
    for title, lines in _sections(result):
        parts.append(f"## {title}\ntimestamp: {now}\n\n" + "".join(f"- {k}: {_value(v)}\n" for k, v in lines) + "\n")
    parts.append("## Summary\n\n" + summary_table(result) + "\n")
    return "\n".join(parts)


def summary_table(result: dict) -> str:
    metrics = _headline(result)
    stage = column_of(result)
    names = sorted(metrics, key=lambda m: (m != "CORE", m == "ChatCORE", m))
    rows = [f"| {'Metric'.ljust(METRIC_WIDTH)} |" + "".join(f" {s.upper().ljust(VALUE_WIDTH)} |" for s in STAGES),
            f"|{'-' * (METRIC_WIDTH + 2)}|" + "".join(f"{'-' * (VALUE_WIDTH + 2)}|" for _ in STAGES)]  # fmt: skip
    for name in names:
        cells = [_value(metrics[name]) if s == stage else "-" for s in STAGES]
        rows.append(f"| {name.ljust(METRIC_WIDTH)} |" + "".join(f" {c.ljust(VALUE_WIDTH)} |" for c in cells))
    return "\n".join(rows) + "\n"


def column_of(result: dict) -> str:
    """The checkpoint's stage; for a checkpoint that does not say, SFT when chat tasks were scored, else BASE."""
    if result.get("stage") in STAGES:
        return result["stage"]
    return "sft" if any(t["suite"] == "chatcore" for t in result.get("tasks", {}).values()) else "base"


def _headline(result: dict) -> dict[str, float]:
    """The summary's rows: CORE, each chat task's accuracy, ChatCORE, then our own tasks and bpb."""
    tasks = result.get("tasks", {})
    out: dict[str, float] = {}
    if "core" in result:
        out["CORE"] = result["core"]
    out.update({label: t["accuracy"] for label, t in tasks.items() if t["suite"] != "core"})
    if "chatcore" in result:
        out["ChatCORE"] = result["chatcore"]
    if "bpb" in result:
        out["bpb"] = result["bpb"]
    return out


def _sections(result: dict) -> list[tuple[str, list[tuple[str, object]]]]:
    tasks = result.get("tasks", {})
    by_suite: dict[str, dict] = {}
    for label, t in tasks.items():
        by_suite.setdefault(t["suite"], {})[label] = t
    sections = []
    base: list[tuple[str, object]] = [("model", result.get("source", "?"))]
    if "core" in result:
        base += [("CORE metric", result["core"])] + [(k, t["centered"]) for k, t in by_suite["core"].items()]
    if "bpb" in result:
        base.append(("bpb", result["bpb"]))
    if len(base) > 1:
        sections.append(("Base model evaluation", base))
    if "chatcore" in by_suite:
        chat = [(k, t["accuracy"]) for k, t in by_suite["chatcore"].items()]
        if "chatcore" in result:
            chat.append(("ChatCORE metric", result["chatcore"]))
        sections.append((f"Chat evaluation {column_of(result)}", chat))
    if "heldout" in by_suite:
        sections.append(("Held-out tasks", [(k, t["accuracy"]) for k, t in by_suite["heldout"].items()]))
    return sections


def _header(result: dict, now: str) -> str:
    lines = [
        "# nanochat-py report card",
        "",
        f"Generated: {now}",
        "",
        f"- Model: {result.get('source', '?')} ({result.get('architecture', '')})",
        f"- Stage: {result.get('stage', 'unknown')}",
        f"- Device: {result.get('device', '?')}, {result.get('dtype', '?')}",
        f"- Platform: {platform.system()}, {os.cpu_count()} logical CPUs",
        f"- Python {platform.python_version()}, PyTorch {torch.__version__}, nanochat-py {__version__}",
    ]
    if result.get("seconds"):
        lines.append("- Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items()))
    if result.get("notes"):
        lines += [f"- Note: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int) and not isinstance(v, bool) and v >= 10000:
        return f"{v:,.0f}"
    return str(v)
