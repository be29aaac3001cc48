"""Benchmark `nanochat-py serve` under load: continuous batching at 1, 4, 16 and 32 concurrent streams, and
the running streams' inter-token gaps while a long prompt arrives.

1. For each stream count (different prompts, temperature 1, max_tokens 64 each): the aggregate decode
   throughput (tokens the worker generated / wall time from the first request sent to the last stream
   closed), its ratio to one stream, the time to first token (request sent -> first token event, p50 and
   p99 over the streams) and the p99 gap between two tokens of a stream.
2. Long prompt under load: 15 streams decode (max_tokens 400); once all are running, one request with a
   ~2,000-token conversation arrives. The gaps between the 15 streams' tokens from that moment until the long
   request's first token (p50, p99, max) show what its prefill costs everyone else; and its own TTFT.

    .venv/bin/python benchmarks/serve_bench.py                      # a random-weight d12-shaped model
    .venv/bin/python benchmarks/serve_bench.py --dtype bf16         # any --dtype serve takes
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
        wait_until_ready(self.proc, self.url, "the server")

    def tokens_served(self) -> int:
        return sum(w["tokens_served"] for w in httpx.get(self.url + "/stats", timeout=10).json()["workers"])

    def stop(self) -> None:
        stop_process(self.proc)


def wait_until_ready(proc: subprocess.Popen, url: str, what: str) -> None:
    """Wait (at most 300 s) until `url`/health answers 200; exit with the process's stderr if it dies first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}:\n{proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise SystemExit(f"{what} was not ready within 300 s")


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def one_stream(client: httpx.AsyncClient, prompt: str | list, max_tokens: int, seed: int) -> list[float]:
    """Stream one reply to the end: when it was sent, then when each token event came (perf_counter)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    body = {"messages": messages, "temperature": 1.0, "max_tokens": max_tokens, "seed": seed}
    return await stream_times(client, "/chat/completions", body, lambda event: 1 if "token" in event else 0)


async def stream_times(client: httpx.AsyncClient, path: str, body: dict, tokens_of) -> list[float]:
    """POST `body` to `path` and read its server-sent events to the end: when it was sent, then when each token
    came (`tokens_of(event)`: how many tokens an event carries)."""
    times = [time.perf_counter()]
    async with client.stream("POST", path, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                raise RuntimeError(event["error"])
            times.extend(time.perf_counter() for _ in range(tokens_of(event)))
    if len(times) < 2:
        raise RuntimeError("a stream ended without a token")
    return times


def _client(url: str, streams: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=streams + 1, max_keepalive_connections=streams + 1)
    return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run_streams(
    url: str, concurrency: int, max_tokens: int, stream=one_stream, prompts: list = PROMPTS
) -> tuple[float, list[list[float]]]:
    """`concurrency` streams at once (`stream`: one_stream, or another server's): wall time, each one's times."""
    async with _client(url, concurrency) as client:
        start = time.perf_counter()
        times = await asyncio.gather(
            *(stream(client, prompts[i % len(prompts)], max_tokens, i) for i in range(concurrency))
        )
        return time.perf_counter() - start, list(times)


def latencies(times: list[list[float]]) -> dict:
    """TTFT p50/p99 and the p99 gap between two tokens of a stream, from run_streams' times."""
    ttfts = [t[1] - t[0] for t in times]
    gaps = [b - a for t in times for a, b in zip(t[1:], t[2:], strict=False)]
    return {"ttft_p50": percentile(ttfts, 50), "ttft_p99": percentile(ttfts, 99),
            "gap_p99": percentile(gaps, 99) if gaps else 0.0}  # fmt: skip


def measure(server: Server, concurrency: int, max_tokens: int) -> dict:
    before = server.tokens_served()
    wall, times = asyncio.run(run_streams(server.url, concurrency, max_tokens))
    tokens = server.tokens_served() - before
    return {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, **latencies(times)}


def long_conversation(tokens: int) -> list[dict]:
    """A conversation of about `tokens` tokens (65k tokenizer), in turns of at most 6,000 characters (the server
    takes 8,000 a message)."""
    from nanochat_py import load_tokenizer

    tok = load_tokenizer(TOKENIZER)
    words = [f"w{i % 997}" for i in range(tokens)]
    while len(tok.encode(" ".join(words))) > tokens:
        words.pop()
    text, turns = " ".join(words), []
    while text:
        cut = text.rfind(" ", 0, 6000) if len(text) > 6000 else len(text)
        turns.append({"role": "user" if len(turns) % 2 == 0 else "assistant", "content": text[:cut]})
        text = text[cut:].strip()
    if turns[-1]["role"] != "user":
        turns.append({"role": "user", "content": "and?"})
    return turns


async def long_prompt_under_load(
    url: str, streams: int, long_prompt, stream=one_stream, prompts: list = PROMPTS
) -> dict:
    """`streams` running streams; a long prompt arrives; their token gaps until its first token."""
    async with _client(url, streams) as client:
        running = [asyncio.create_task(stream(client, prompts[i % len(prompts)], 400, i)) for i in range(streams)]
        await asyncio.sleep(3.0)  # every stream prefilled and decoding
        long = await stream(client, long_prompt, 4, 99)
        times = await asyncio.gather(*running)
    sent, arrived = long[0], long[1]
    window = [b - a for t in times for a, b in zip(t[1:], t[2:], strict=False) if b >= sent and a <= arrived]
    return {"long_ttft_s": arrived - sent, "gap_p50": percentile(window, 50), "gap_p99": percentile(window, 99),
            "gap_max": max(window), "gaps": len(window)}  # fmt: skip


def table(results: dict[int, dict], levels: list[int]) -> str:
    header = [
        "| streams | tok/s | vs 1 stream | TTFT p50 / p99 (s) | inter-token p99 (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(header + table_rows(results, levels))


def table_rows(results: dict[int, dict], levels: list[int], first_cell: str | None = None) -> list[str]:
    """One markdown row per stream count (after `first_cell`, e.g. which server, if given)."""
    one = results[levels[0]]["tok_s"]
    lead = "| " if first_cell is None else f"| {first_cell} | "
    return [f"{lead}{c} | {r['tok_s']:.1f} | {r['tok_s'] / one:.2f}x | {r['ttft_p50']:.3f} / {r['ttft_p99']:.3f} "
            f"| {r['gap_p99']:.3f} |" for c in levels for r in [results[c]]]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=None, help="model to serve (default: a random-weight model)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="d12", help="shape of the random model (d12)")
    parser.add_argument("--dtype", default="fp32", help="--dtype of the server (fp32)")
    parser.add_argument("--concurrency", default="1,4,16,32", help="comma-separated stream counts (1,4,16,32)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per reply (64)")
    parser.add_argument("--long-prompt", type=int, default=2000, help="tokens in the long prompt (2000; 0: skip)")
    parser.add_argument("--device", default="cpu", help="--device of the server (cpu)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    extra = ["--device", args.device, "--dtype", args.dtype, "--max-queue", str(max(64, max(levels)))]

    with tempfile.TemporaryDirectory(prefix="nanochat-bench-") as tmp:
        source = args.source or str(make_model(Path(tmp), args.shape))
        results: dict[int, dict] = {}
        started = time.perf_counter()
        server = Server(source, max(levels), extra)
        try:
            measure(server, 2, 4)  # warm-up: first-call overheads stay out of the numbers
            for c in levels:
                r = results[c] = measure(server, c, args.max_tokens)
                print(f"streams={c:2d}: {r['tokens']} tokens in {r['wall_s']:.1f} s = {r['tok_s']:.1f} tok/s, "
                      f"TTFT p50 {r['ttft_p50']:.3f} s, p99 {r['ttft_p99']:.3f} s", file=sys.stderr)  # fmt: skip
            if args.long_prompt:
                long = asyncio.run(long_prompt_under_load(server.url, 15, long_conversation(args.long_prompt)))
        finally:
            server.stop()
        print(f"total benchmark time: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(f"{args.dtype}, {source if args.source else 'random d12-shaped G5'}\n")
    print(table(results, levels))
    if args.long_prompt:
        print(f"\nlong prompt (~{args.long_prompt} tokens) while 15 streams decode: TTFT {long['long_ttft_s']:.2f} s;"
              f" the streams' inter-token gaps meanwhile: p50 {long['gap_p50']:.3f} s, p99 {long['gap_p99']:.3f} s,"
              f" max {long['gap_max']:.3f} s ({long['gaps']} gaps)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
