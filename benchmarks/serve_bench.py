"""Benchmark `nanochat-py serve`: continuous batching (--max-batch 16) against one request at a time (--max-batch 1).

For 1, 4 and 16 concurrent streams (different prompts, temperature 1, max_tokens 64 each) it measures the
aggregate decode throughput (tokens the worker generated / wall time from the first request sent to the
last stream closed) and the time to first token of each stream (request sent -> first token event), then
prints a markdown table with the batched/serial ratios.

    .venv/bin/python benchmarks/serve_bench.py                      # a random-weight d12-shaped model
    .venv/bin/python benchmarks/serve_bench.py --source <source>    # any source nanochat_py.load takes
    .venv/bin/python benchmarks/serve_bench.py --shape small        # a d4 / 256-wide model, for a quick run

Without --source it writes a random-weight G5 model (the 65k tokenizer of tests/fixtures) into a temporary
directory. Replies are nonsense; only the speed matters. Needs httpx (the dev extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer-65k" / "tokenizer.pkl"
SHAPES = {
    "d12": dict(n_layer=12, n_head=6, n_kv_head=6, n_embd=768),
    "small": dict(n_layer=4, n_head=4, n_kv_head=4, n_embd=256),
}
PROMPTS = [
    "Why is the sky blue?", "Tell me a story about a dragon.", "What is 2+2?", "Name three colors.",
    "Write a haiku about the sea.", "Who wrote Hamlet?", "Count to ten.", "What is the capital of France?",
    "Say something nice.", "Explain gravity to a child.", "Give me a recipe for pancakes.", "What time is it?",
    "Translate 'hello' into French.", "Recommend a good book.", "How do airplanes fly?", "Goodbye!",
]  # fmt: skip


def make_model(directory: Path, shape: str) -> Path:
    """A random-weight G5 checkpoint of `shape` in nanochat's native layout, with the 65k tokenizer beside it."""
    import torch

    from nanochat_py import save_checkpoint
    from nanochat_py.config import config_for
    from nanochat_py.model import GPT

    torch.manual_seed(0)
    model = GPT(config_for("G5", sequence_len=2048, vocab_size=65536, **SHAPES[shape])).eval()
    save_checkpoint(model, directory, step=0, extra_meta={"note": f"random-weight {shape} benchmark model"})
    shutil.copy(TOKENIZER, directory / "tokenizer.pkl")
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote a random-weight G5 {shape} model ({params / 1e6:.0f}M parameters) to {directory}", file=sys.stderr)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, source: str, max_batch: int, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "nanochat_py.cli", "serve", "--source", source, "--host", "127.0.0.1",
               "--port", str(self.port), "--max-batch", str(max_batch), *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}:\n{self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit("the server was not ready within 300 s")

    def tokens_served(self) -> int:
        return sum(w["tokens_served"] for w in httpx.get(self.url + "/stats", timeout=10).json()["workers"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def one_stream(client: httpx.AsyncClient, prompt: str, max_tokens: int, seed: int) -> float:
    """Stream one reply to the end; the time to its first token."""
    body = {"messages": [{"role": "user", "content": prompt}], "temperature": 1.0, "max_tokens": max_tokens,
            "seed": seed}  # fmt: skip
    sent, first = time.perf_counter(), None
    async with client.stream("POST", "/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                raise RuntimeError(event["error"])
            if first is None and "token" in event:
                first = time.perf_counter() - sent
    if first is None:
        raise RuntimeError("a stream ended without a token")
    return first


async def run_streams(url: str, concurrency: int, max_tokens: int) -> tuple[float, list[float]]:
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits) as client:
        start = time.perf_counter()
        ttfts = await asyncio.gather(
            *(one_stream(client, PROMPTS[i % len(PROMPTS)], max_tokens, seed=i) for i in range(concurrency))
        )
        return time.perf_counter() - start, list(ttfts)


def measure(server: Server, concurrency: int, max_tokens: int) -> dict:
    before = server.tokens_served()
    wall, ttfts = asyncio.run(run_streams(server.url, concurrency, max_tokens))
    tokens = server.tokens_served() - before
    return {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, "ttft_mean": statistics.mean(ttfts),
            "ttft_p50": statistics.median(ttfts)}  # fmt: skip


def table(results: dict, levels: list[int], max_batch: int) -> str:
    rows = [
        f"| streams | batched tok/s (--max-batch {max_batch}) | serial tok/s (--max-batch 1) | throughput ratio "
        "| batched TTFT mean / p50 (s) | serial TTFT mean / p50 (s) | TTFT ratio (mean) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in levels:
        b, s = results["batched"][c], results["serial"][c]
        rows.append(
            f"| {c} | {b['tok_s']:.1f} | {s['tok_s']:.1f} | {b['tok_s'] / s['tok_s']:.2f}x "
            f"| {b['ttft_mean']:.3f} / {b['ttft_p50']:.3f} | {s['ttft_mean']:.3f} / {s['ttft_p50']:.3f} "
            f"| {b['ttft_mean'] / s['ttft_mean']:.2f}x |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=None, help="model to serve (default: a random-weight model)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="d12", help="shape of the random model (d12)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated stream counts (1,4,16)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per reply (64)")
    parser.add_argument("--max-batch", type=int, default=16, help="--max-batch of the batched server (16)")
    parser.add_argument("--device", default="cpu", help="--device of the servers (cpu)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    extra = ["--device", args.device, "--max-queue", str(max(64, max(levels)))]

    with tempfile.TemporaryDirectory(prefix="nanochat-bench-") as tmp:
        source = args.source or str(make_model(Path(tmp), args.shape))
        results: dict[str, dict[int, dict]] = {}
        started = time.perf_counter()
        for mode, max_batch in (("batched", args.max_batch), ("serial", 1)):
            server = Server(source, max_batch, extra)
            try:
                measure(server, 2, 4)  # warm-up: first-call overheads stay out of the numbers
                results[mode] = {}
                for c in levels:
                    r = results[mode][c] = measure(server, c, args.max_tokens)
                    print(f"{mode:8s} streams={c:2d}: {r['tokens']} tokens in {r['wall_s']:.1f} s = "
                          f"{r['tok_s']:.1f} tok/s, TTFT mean {r['ttft_mean']:.3f} s, p50 {r['ttft_p50']:.3f} s",
                          file=sys.stderr)  # fmt: skip
            finally:
                server.stop()
        print(f"total benchmark time (both servers): {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(table(results, levels, args.max_batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
