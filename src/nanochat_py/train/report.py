"""`nanochat-py eval`: score a checkpoint and write a JSON report plus a PNG of its training run.

Tasks: `bpb` (bits-per-byte on held-out text) and `arithmetic`, `letters`, `identity` (accuracy, tools on).
Problems come from a held-out directory ({task}.jsonl, text/ for bpb) or are generated from the held-out
side of the split. Without --source this scores the built-in model on the held-out set shipped with it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tqdm import tqdm

from ..arguments import whole
from ..errors import NanochatError
from ..loader import load
from ..sources import DEFAULT_MODEL_DIR
from .data import read_documents, text_rows
from .evaluate import accuracy, bits_per_byte
from .tasks import Problem, problems, read_words
from .trainer import lineage_of

TASKS = ("bpb", "arithmetic", "letters", "identity")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", "-s", default=None, help="checkpoint to score (default: the built-in model)")
    p.add_argument("--task", default=",".join(TASKS), help=f"comma-separated: {', '.join(TASKS)} (all)")
    p.add_argument("--heldout", type=Path, default=None, help="dir of {task}.jsonl problems and text/ for bpb")
    p.add_argument("--text", nargs="+", default=None, help="held-out text files for bpb (instead of --heldout)")
    p.add_argument("--words", default=None, help="word list to draw held-out letters problems from")
    p.add_argument("--num", type=whole(1), default=200, help="problems per task when generating them (200)")
    p.add_argument("--seq-len", type=whole(1), default=None, help="row length for bpb (default: the model's context)")
    p.add_argument("--out", type=Path, default=Path("eval.json"), help="JSON report (eval.json)")
    p.add_argument("--plot", type=Path, default=Path("eval.png"), help="PNG of the run's curves and scores")
    p.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> dict:
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise NanochatError(f"unknown task(s) {', '.join(sorted(unknown))}; choose from {', '.join(TASKS)}")
    heldout = args.heldout or (DEFAULT_MODEL_DIR / "heldout" if args.source is None else None)
    bot = load(args.source, device=args.device)
    report: dict = {"source": args.source or "built-in", "model": repr(bot), "results": {}}
    for task in tasks:
        if task == "bpb":
            report["results"]["bpb"] = _bpb(bot, args, heldout)
        else:
            todo = _problems(task, args, heldout)
            with tqdm(total=len(todo), desc=task, unit="problem") as bar:
                report["results"][task] = accuracy(bot, todo, progress=lambda: bar.update(1))
    args.out.write_text(json.dumps(report, indent=2))
    history = lineage_of(args.source if args.source is not None else DEFAULT_MODEL_DIR)
    report["plot"] = str(plot(history, report["results"], args.plot)) if args.plot else None
    return report


def _bpb(bot, args, heldout: Path | None) -> dict:
    paths = args.text or ([heldout / "text"] if heldout else None)
    if not paths:
        raise NanochatError("bpb needs held-out text: pass --text FILES or --heldout DIR (with a text/ folder)")
    documents = list(read_documents(paths))
    seq_len = min(args.seq_len or bot.config.sequence_len, bot.config.sequence_len)
    rows = text_rows(bot.tokenizer, documents, seq_len)
    return {"bpb": bits_per_byte(bot.model, bot.tokenizer, rows, batch_size=4), "rows": len(rows), "seq_len": seq_len}


def _problems(task: str, args, heldout: Path | None) -> list[Problem]:
    if heldout is not None:
        path = heldout / f"{task}.jsonl"
        if not path.is_file():
            raise NanochatError(f"{path} does not exist: the held-out dir has no {task} problems")
        return [Problem(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    words = read_words(args.words) if args.words else None
    if task == "letters" and not words:
        raise NanochatError("the letters task needs --words FILE (e.g. /usr/share/dict/words) or --heldout DIR")
    return problems(task, args.num, words)


def plot(stages: list[dict], results: dict, path: Path) -> Path:
    """One panel per training stage (loss, held-out bpb or reward by step) and one of the eval scores."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    panels = len(stages) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=False):
        for key, style in (("loss", "-"), ("val_bpb", "o-"), ("reward", "-")):
            points = [(h["step"], h[key]) for h in stage["history"] if key in h]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=key, markersize=3)
        ax.set_title(stage["stage"])
        ax.set_xlabel("step")
        ax.legend()
    ax = axes[0][-1]
    names = [t for t in results if t != "bpb"]
    ax.bar(names, [results[t]["accuracy"] for t in names], color="#4a7")
    ax.set_ylim(0, 1)
    title = "accuracy (held-out)"
    if "bpb" in results:
        title += f"; bpb {results['bpb']['bpb']:.3f}"
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
