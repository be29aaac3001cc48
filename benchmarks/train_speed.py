"""Pretraining speed: `nanochat-py train base` beside nanochat's own `scripts.base_train`, same text, same
tokenizer, same model size and tokens per step, on this machine, in one run.

    .venv/bin/python benchmarks/train_speed.py --reference /tmp/nanochat-92d63d4 --text DOCS... \
        --tokenizer TOKDIR --depth 4 --steps 100 --out benchmarks/train_speed

--reference is a git export of karpathy/nanochat (e.g. `git archive 92d63d4 | tar -x -C DIR`), run in its own
process with this venv's Python and never imported here. It reads parquet shards (the last one is its held-out
split) and tokenizer.pkl from $NANOCHAT_BASE_DIR, which this script builds in a temporary directory from the
same documents and tokenizer our run uses. The reference compiles its model with torch.compile, as it ships.

Printed and written to OUT/train_speed.json (+ OUT/train_speed.png, the loss curves): tokens/s over the steps
after the first 10 (compilation and warm-up excluded), peak memory (the process's max RSS), the loss at equal
tokens, and model FLOPs utilisation against this machine's measured matrix-product peak in fp32 and bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
SKIP = 10  # steps left out of the speed (compilation, allocator warm-up)
VAL_PERCENT = 2.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, help="a git export of karpathy/nanochat (omit to time ours only)")
    p.add_argument("--text", nargs="+", required=True, type=Path, help="documents: .txt/.md/.rst files or dirs")
    p.add_argument("--tokenizer", required=True, type=Path, help="a directory with tokenizer.pkl + token_bytes.pt")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--modes", default="fp32,bf16,bf16+compile", help="our runs: precision[+compile], comma-separated")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "train_speed")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    documents = _documents(args.text)
    peaks = {"fp32": _matmul_peak(torch.float32), "bf16": _matmul_peak(torch.bfloat16)}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            runs[f"nanochat-py {mode}"] = _ours(args, mode, Path(tmp) / mode.replace("+", "-"))
        if args.reference:
            runs["nanochat base_train (compiled)"] = _reference(args, documents, Path(tmp) / "reference")
    flops = _flops_per_token(args.depth, args.seq_len, _vocab_size(args.tokenizer))
    report = {"machine": _machine(), "threads": torch.get_num_threads(), "depth": args.depth, "seq_len": args.seq_len,
              "tokens_per_step": args.batch_size * args.seq_len, "steps": args.steps, "flops_per_token": flops,
              "matmul_peak_gflops": peaks, "runs": {}}  # fmt: skip
    for name, run in runs.items():
        tok_s = _speed(run["tok_s"])
        precision = "bf16" if "bf16" in name else "fp32"
        report["runs"][name] = {**run, "speed_tok_s": tok_s, "mfu": tok_s * flops / (peaks[precision] * 1e9),
                                "mfu_precision": precision}  # fmt: skip
    (args.out / "train_speed.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot(report, args.out / "train_speed.png")
    print(_table(report))


def _documents(paths: list[Path]) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents), read and split exactly as `train base` reads and splits them."""
    from nanochat_py.train.data import is_held_out, read_documents

    documents = list(read_documents(paths))
    train = [d for d in documents if not is_held_out(d, VAL_PERCENT)]
    return train, [d for d in documents if is_held_out(d, VAL_PERCENT)]


def _ours(args, mode: str, out: Path) -> dict:
    precision, _, compiled = mode.partition("+")
    command = [sys.executable, "-m", "nanochat_py.cli", "train", "base", "--depth", str(args.depth),
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--data", *map(str, args.text), "--tokenizer", str(args.tokenizer), "--out", str(out),
               "--precision", precision, "--device", "cpu", "--val-percent", str(VAL_PERCENT)]  # fmt: skip
    if compiled:
        command.append("--compile")
    seconds, peak_mb, _ = _run(command, cwd=ROOT)
    meta = json.loads(sorted(out.glob("meta_*.json"))[-1].read_text())
    steps = [h for h in meta["history"] if "loss" in h]
    return {"loss": [h["loss"] for h in steps], "tok_s": [h["tok_s"] for h in steps], "wall_s": seconds,
            "peak_mb": peak_mb}  # fmt: skip


def _reference(args, documents: tuple[list[str], list[str]], base: Path) -> dict:
    """nanochat's base_train on the same documents: parquet shards (the last is its held-out split)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (base / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer.pkl", "token_bytes.pt"):
        (base / "tokenizer" / name).write_bytes((args.tokenizer / name).read_bytes())
    shards = base / "base_data_climbmix"
    shards.mkdir()
    for index, docs in enumerate(documents):  # its last shard is its held-out split: ours
        pq.write_table(pa.table({"text": docs}), shards / f"shard_{index:05d}.parquet")
    command = [sys.executable, "-m", "scripts.base_train", "--device-type", "cpu", "--depth", str(args.depth),
               "--max-seq-len", str(args.seq_len), "--device-batch-size", str(args.batch_size),
               "--total-batch-size", str(args.batch_size * args.seq_len), "--num-iterations", str(args.steps),
               "--eval-every", "-1", "--core-metric-every", "-1", "--sample-every", "-1"]  # fmt: skip
    # it imports wandb unconditionally, though a run named "dummy" (its default) never calls it: an empty
    # stand-in module spares installing wandb
    (base / "stand-ins").mkdir()
    (base / "stand-ins" / "wandb.py").write_text('"""Empty: nanochat\'s dummy runs never call wandb."""\n')
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(base), "PYTHONPATH": f"{args.reference}:{base / 'stand-ins'}"}
    seconds, peak_mb, output = _run(command, cwd=args.reference, env=env)
    # its log line per step: "step 00012/00100 (12.00%) | loss: 6.123456 | ... | tok/sec: 4,441 | ..."
    steps = re.findall(r"step \d+/\d+ .*?loss: ([\d.]+).*?tok/sec: ([\d,]+)", output)
    return {"loss": [float(loss) for loss, _ in steps], "tok_s": [int(t.replace(",", "")) for _, t in steps],
            "wall_s": seconds, "peak_mb": peak_mb}  # fmt: skip


def _run(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, the process tree's peak RSS in MB, its output); fails loudly with the output's tail."""
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{output[-3000:]}")
    return time.perf_counter() - began, usage.ru_maxrss / 1024, output


def _speed(per_step: list[float]) -> float:
    """Tokens/s over the steps after SKIP: total tokens over total time (the harmonic mean of the rates)."""
    rates = per_step[SKIP:] or per_step
    return len(rates) / sum(1 / r for r in rates)


def _matmul_peak(dtype: torch.dtype) -> float:
    """GFLOP/s of a large matrix product in `dtype` on this CPU: the yardstick of utilisation."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    best = float("inf")
    for _ in range(8):
        began = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - began)
    return 2 * 2048**3 / best / 1e9


def _vocab_size(tokenizer: Path) -> int:
    return int(torch.load(tokenizer / "token_bytes.pt", weights_only=True).numel())


def _flops_per_token(depth: int, seq_len: int, vocab: int) -> float:
    """nanochat's estimate: 6 x the parameters that multiply (not the embedding) + 12 x layers x width x context
    for attention (width = 64 per layer in 128-wide heads)."""
    width = -(-depth * 64 // 128) * 128
    matrices = depth * 12 * width * width + vocab * width  # q, k, v, o (4 w^2), MLP (8 w^2), lm_head
    return 6 * matrices + 12 * depth * width * seq_len


def _machine() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def _table(report: dict) -> str:
    checkpoints = [s for s in (10, 25, 50, 100, 200, 400) if s <= report["steps"]]
    lines = [f"depth {report['depth']}, {report['tokens_per_step']} tokens/step, {report['threads']} threads, "
             f"{report['machine']}; matmul peak fp32 {report['matmul_peak_gflops']['fp32']:.0f} GFLOP/s, "
             f"bf16 {report['matmul_peak_gflops']['bf16']:.0f}"]  # fmt: skip
    header = ["run", "tok/s", "MFU", "peak MB", "wall s", *[f"loss@{s}" for s in checkpoints]]
    rows = [header]
    reference = report["runs"].get("nanochat base_train (compiled)")
    for name, run in report["runs"].items():
        ratio = f" ({run['speed_tok_s'] / reference['speed_tok_s']:.2f}x)" if reference else ""
        losses = [f"{run['loss'][s - 1]:.3f}" if s <= len(run["loss"]) else "-" for s in checkpoints]
        rows.append([name, f"{run['speed_tok_s']:,.0f}{ratio}", f"{run['mfu']:.1%} {run['mfu_precision']}",
                     f"{run['peak_mb']:,.0f}", f"{run['wall_s']:.0f}", *losses])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(lines + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows])


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in report["runs"].items():
        ax.plot(range(1, len(run["loss"]) + 1), run["loss"], label=name)
    ax.set(xlabel=f"step ({report['tokens_per_step']} tokens each)", ylabel="training loss", ylim=(None, 9))
    ax.set_title(f"depth {report['depth']}: loss at equal tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
