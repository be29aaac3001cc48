"""`nanochat-py eval`: score a checkpoint on nanochat's suites and our own tasks, and write the results.

Suites: `core` (the DCLM bundle's tasks, base models), the six ChatCORE tasks (chat models: arc-easy,
arc-challenge, mmlu, gsm8k, humaneval, spellingbee), `bpb` (bits per byte of text), and the built-in model's
held-out tasks (arithmetic, letters, identity). `--out DIR` gets eval.json, report.md (nanochat's report card),
model_card.md (a Hugging Face model card with model-index results) and eval.png (the training curves and scores);
an --out ending in .json gets that JSON file alone (and --plot its PNG), as before.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from ..arguments import whole
from ..chatbot import Chatbot
from ..checkpoint import read_meta
from ..errors import NanochatError
from ..loader import load
from ..sources import DEFAULT_MODEL_DIR, resolve
from ..train.tasks import Problem, problems, read_words
from ..train.trainer import lineage_of
from . import bpb as bpb_eval
from .bundle import find_bundle, read_bundle
from .core import evaluate_core
from .heldout import TASKS as HELDOUT_TASKS
from .heldout import accuracy
from .model_card import model_card
from .plot import plot
from .report import report_card
from .scores import TaskScore

CHAT_TASKS = ("arc-easy", "arc-challenge", "mmlu", "gsm8k", "humaneval", "spellingbee")
TASKS = ("core", *CHAT_TASKS, "bpb", *HELDOUT_TASKS)
DEFAULT_TASKS = ("bpb", *HELDOUT_TASKS)
PHASE_STAGES = {"base": "base", "mid": "sft", "chatsft": "sft", "sft": "sft", "chatrl": "rl", "rl": "rl"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", "-s", default=None, help="checkpoint to score (default: the built-in model)")
    p.add_argument("--task", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated: {', '.join(TASKS)} (default: {','.join(DEFAULT_TASKS)})")  # fmt: skip
    p.add_argument("--bundle", type=Path, default=None,
                   help="CORE: the DCLM eval bundle, a directory or eval_bundle.zip (default: "
                        "$NANOCHAT_BASE_DIR/eval_bundle, else downloaded once into ~/.cache/nanochat-py)")  # fmt: skip
    p.add_argument("--data", type=Path, default=None,
                   help="chat tasks: a directory with the datasets in the Hub's layout (default: the Hugging Face "
                        "cache, downloading once when online)")  # fmt: skip
    p.add_argument("--max-per-task", type=whole(1), default=None,
                   help="at most N items per task (CORE: the first N of nanochat's shuffle; bpb: N rows)")  # fmt: skip
    p.add_argument("--crop-context", action="store_true",
                   help="CORE: crop prompts longer than the model's context to their last tokens (nanochat runs its "
                        "own models on the whole prompt)")  # fmt: skip
    p.add_argument("--heldout", type=Path, default=None, help="dir of {task}.jsonl problems and text/ for bpb")
    p.add_argument("--text", nargs="+", default=None,
                   help="bpb: text files, .jsonl or parquet shards (a text column), or directories")  # fmt: skip
    p.add_argument("--words", default=None, help="word list to draw held-out letters problems from")
    p.add_argument("--num", type=whole(1), default=200, help="problems per task when generating them (200)")
    p.add_argument("--seq-len", type=whole(1), default=None, help="row length for bpb (default: the model's context)")
    p.add_argument("--seed", type=whole(0), default=0, help="seed for the chat tasks (0)")
    p.add_argument("--out", type=Path, default=Path("eval"),
                   help="directory for eval.json, report.md, model_card.md, eval.png (eval/); a path ending in "
                        ".json writes only that report")  # fmt: skip
    p.add_argument("--plot", type=Path, default=None, help="PNG of the run's curves and scores (OUT/eval.png)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default=None, help="fp32, bf16, int8 or int4 (default: fp32 on CPU, bf16 on CUDA)")


def run(args: argparse.Namespace) -> dict:
    """Score every asked task, write the outputs, and return what eval.json holds."""
    tasks = _tasks(args.task)
    bundle = read_bundle(args.bundle or find_bundle()) if "core" in tasks else None  # bad input fails before loading
    heldout = args.heldout or (DEFAULT_MODEL_DIR / "heldout" if args.source is None else None)
    bot = load(args.source, device=args.device, dtype=args.dtype)
    result = _about(bot, args.source)
    if bundle is not None:
        _timed(result, "core", lambda: _core(bot, bundle, args, result))
    chat = [t for t in tasks if t in CHAT_TASKS]
    if chat:
        _chat(bot, chat, args, result)
    if "bpb" in tasks:
        _timed(result, "bpb", lambda: _bpb(bot, args, heldout, result))
    for task in (t for t in tasks if t in HELDOUT_TASKS):
        _timed(result, task, lambda task=task: _heldout(bot, task, args, heldout, result))
    write_outputs(result, bot, args)
    return result


def _about(bot: Chatbot, source: str | None) -> dict:
    """What was scored, where, and the (so far empty) scores."""
    return {
        "source": source or "built-in",
        "model": repr(bot),
        "architecture": describe(bot),
        "stage": stage_of(bot.source),
        "device": str(bot.device),
        "dtype": str(bot.model.dtype).removeprefix("torch."),
        "tasks": {},
        "results": {},
        "seconds": {},
    }


def _timed(result: dict, name: str, work) -> None:
    began = time.perf_counter()
    work()
    result["seconds"][name] = time.perf_counter() - began


def _core(bot: Chatbot, bundle, args, result: dict) -> None:
    crop = bot.config.sequence_len if args.crop_context else None
    core = evaluate_core(bot, bundle, args.max_per_task, crop, progress=True)
    result["core"] = core.core
    result["tasks"].update({t.score.task: {**t.score.to_dict(), "suite": "core"} for t in core.tasks})


def _heldout(bot: Chatbot, task: str, args, heldout: Path | None, result: dict) -> None:
    todo = _problems(task, args, heldout)[: args.max_per_task]
    with tqdm(total=len(todo), desc=task, unit="problem") as bar:
        scored = accuracy(bot, todo, progress=lambda: bar.update(1))
    result["results"][task] = scored
    result["tasks"][task] = {**TaskScore(task, scored["accuracy"], scored["n"]).to_dict(), "suite": "heldout"}


def _tasks(text: str) -> list[str]:
    tasks = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise NanochatError(f"unknown task(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def _chat(bot: Chatbot, chat: list[str], args, result: dict) -> None:
    from .chat_tasks import evaluate  # the chat suite (and its sandbox) loads only when asked for

    scores = []
    for task in chat:
        began = time.perf_counter()
        scores.append(evaluate(bot, task, data=args.data, limit=args.max_per_task, seed=args.seed, progress=True))
        result["tasks"][scores[-1].task] = {**scores[-1].to_dict(), "suite": "chatcore"}
        result["seconds"][task] = time.perf_counter() - began
    if set(chat) == set(CHAT_TASKS):  # nanochat reports ChatCORE only when all six tasks were scored
        result["chatcore"] = sum(s.centered for s in scores) / len(scores)


def _bpb(bot: Chatbot, args, heldout: Path | None, result: dict) -> None:
    paths = args.text or ([heldout / "text"] if heldout else None)
    if not paths:
        raise NanochatError("bpb needs text: pass --text FILES or --heldout DIR (with a text/ folder)")
    seq_len = min(args.seq_len or bot.config.sequence_len, bot.config.sequence_len)
    rows = bpb_eval.text_rows(bot.tokenizer, bpb_eval.read_texts(paths), seq_len, args.max_per_task)
    result["bpb"] = bpb_eval.bits_per_byte(bot.model, bot.tokenizer, rows, batch_size=4)
    result["results"]["bpb"] = {"bpb": result["bpb"], "rows": len(rows), "seq_len": seq_len}


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


def describe(bot: Chatbot) -> str:
    c = bot.config
    params = sum(p.numel() for p in bot.model.parameters())
    return (f"{c.generation}, {c.n_layer} layers, {c.n_embd} wide, {params / 1e6:.1f}M parameters, "
            f"{c.vocab_size:,}-token vocabulary, {c.sequence_len:,}-token context")  # fmt: skip


def stage_of(source: str) -> str:
    """base, sft or rl: from our checkpoints' meta, else from nanochat's <phase>_checkpoints folder; else unknown."""
    try:
        files = resolve(source)
        meta = read_meta(files.meta) if files.layout == "native" and files.meta else {}
    except NanochatError:
        return "unknown"
    if meta.get("stage") in PHASE_STAGES:
        return PHASE_STAGES[meta["stage"]]
    for part in reversed(Path(files.weights[0]).parts):
        if part.endswith("_checkpoints") and part.removesuffix("_checkpoints") in PHASE_STAGES:
            return PHASE_STAGES[part.removesuffix("_checkpoints")]
    return "unknown"


def model_name(source: str) -> str:
    if source.startswith("hf:"):
        return source.removeprefix("hf:").split("@")[0].rsplit("/", 1)[-1]
    path = Path(source).expanduser().resolve()
    return "nanochat-py-builtin" if path == DEFAULT_MODEL_DIR.resolve() else path.name


def write_outputs(result: dict, bot: Chatbot, args) -> None:
    out: Path = args.out
    stages = lineage_of(bot.source)
    accuracies = {label: t["accuracy"] for label, t in result["tasks"].items()}
    if out.suffix == ".json":  # the single JSON report of earlier versions
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        result["written"] = [str(out)]
        if args.plot:  # never a PNG nobody asked for in the working directory
            result["plot"] = str(plot(stages, accuracies, result.get("bpb"), args.plot))
            result["written"].append(result["plot"])
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(report_card(result))
    (out / "model_card.md").write_text(model_card(result, model_name(bot.source)))
    result["plot"] = str(plot(stages, accuracies, result.get("bpb"), args.plot or out / "eval.png"))
    result["written"] = [str(out / n) for n in ("eval.json", "report.md", "model_card.md")] + [result["plot"]]


def summary(result: dict) -> list[str]:
    """The lines `nanochat-py eval` prints: each score, then what it wrote."""
    lines = []
    if "core" in result:
        lines.append(f"CORE: {result['core']:.4f}")
    for label, t in result["tasks"].items():
        if t["suite"] != "core":
            lines.append(f"{label}: {t['accuracy']:.1%} of {t['n']}")
    if "chatcore" in result:
        lines.append(f"ChatCORE: {result['chatcore']:.4f}")
    if "bpb" in result:
        lines.append(f"bpb: {result['bpb']:.4f}")
    return lines + [f"wrote {', '.join(result['written'])}"]
