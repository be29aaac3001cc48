"""`nanochat-py serve` beside llama.cpp's own server (`llama-server`) under the same load, in one run.

serve_bench.py's stream counts against both servers, per precision (bf16 - BF16, int8 - Q8_0), ours first
and llama-server straight after (memory bandwidth here drifts from minute to minute):
1. 1, 4, 16 and 32 concurrent streams of 64 tokens (temperature 1, top-k 50): aggregate tokens/s (token
   events received over the wall time from the first request sent to the last stream closed), its ratio to
   one stream, TTFT p50/p99 and the p99 gap between two tokens of a stream;
2. a ~2,000-token prompt arriving while 15 streams decode: the streams' gaps until its first token.

The models: serve_bench.py's random-weight d12-shaped G5 (65k tokenizer) for us; for llama.cpp, the
llama-architecture twin llama_cpp_peer.py writes for it (the same layers, width and vocabulary, a SwiGLU FFN
holding as many weights as our MLP; G5's value-embedding tables are looked up, not multiplied, and have no
counterpart). Both vocabularies have 65,536 tokens, so llama-server is sent the very token ids our server
renders for the same chat prompt (a /completion request with a token-id prompt: llama-server's random
vocabulary has no chat template), and the same number of tokens for the long prompt.

llama-server: the llama.cpp sources vendored in llama-cpp-python 0.3.36's sdist (its wheel builds the library,
not the server), built with GGML_NATIVE, without its web UI, curl or OpenSSL; 32 parallel slots, continuous
batching (its default), one KV cache shared by the slots (-kvu, so the long prompt fits one slot), 2 threads,
no repacked or AMX buffers (-nr: llama.cpp's AMX matmul crashes on this machine, see llama_cpp_peer.py);
requests with n_predict 64 (400 for the running streams), ignore_eos, temperature 1, top_k 50, top_p 1,
min_p 0 and no prompt cache (ours keeps none either).

    .venv/bin/python benchmarks/llama_server_peer.py --install     # once: builds llama-server (~13 min on 2 cores)
    .venv/bin/python benchmarks/llama_server_peer.py               # bf16 and int8, about 5 minutes
    .venv/bin/python benchmarks/llama_server_peer.py --dtype bf16 --concurrency 1,16

--install makes ~/.cache/nanochat-py/llama-server/ (the build, and a small venv with gguf and numpy that writes
the GGUF files; they are cached in ~/.cache/nanochat-py/llama-cpp-models, as llama_cpp_peer.py's are).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import llama_cpp_peer  # noqa: E402
import serve_bench  # noqa: E402

HOME = llama_cpp_peer.CACHE / "llama-server"
SDIST = "llama-cpp-python==0.3.36"
PAIRS = {"bf16": "BF16", "int8": "Q8_0"}
SLOTS, CONTEXT = 32, 16384
CMAKE_FLAGS = ["-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
               "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]  # fmt: skip


def install(home: Path) -> None:
    """Build llama-server from the sdist's vendored llama.cpp, and a venv that can write GGUF files."""
    home.mkdir(parents=True, exist_ok=True)
    venv = home / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "gguf", "numpy"], check=True)
    with tempfile.TemporaryDirectory(prefix="llama-sdist-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                        "-d", tmp], check=True)  # fmt: skip
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (source,) = Path(tmp).glob("*/vendor/llama.cpp")
        build = Path(tmp) / "build"
        print(f"building llama-server from {SDIST}'s vendored llama.cpp (about 13 minutes on 2 cores)", file=sys.stderr)
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], check=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count())],
                       check=True)  # fmt: skip
        if (home / "bin").exists():
            shutil.rmtree(home / "bin")
        shutil.copytree(build / "bin", home / "bin", symlinks=True)  # the server and its shared libraries
    print(f"done: {home / 'bin' / 'llama-server'}", file=sys.stderr)


class LlamaServer:
    """llama-server on a free loopback port, ready when /health says so."""

    def __init__(self, binary: Path, gguf: Path, threads: int):
        self.url = f"http://127.0.0.1:{serve_bench.free_port()}"
        cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
               "-np", str(SLOTS), "-c", str(CONTEXT), "-kvu", "-t", str(threads), "-tb", str(threads), "-nr",
               "--no-webui"]  # fmt: skip
        env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        serve_bench.wait_until_ready(self.proc, self.url, "llama-server")

    def stop(self) -> None:
        serve_bench.stop_process(self.proc)


async def llama_stream(client: httpx.AsyncClient, prompt: list[int], max_tokens: int, seed: int) -> list[float]:
    """One /completion stream to the end: when it was sent, then when each event carrying a token came."""
    body = {
        "prompt": prompt,
        "n_predict": max_tokens,
        "ignore_eos": True,
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
        "min_p": 0.0,
        "seed": seed,
        "cache_prompt": False,
        "stream": True,
        "return_tokens": True,
    }
    return await serve_bench.stream_times(client, "/completion", body, lambda event: len(event.get("tokens", [])))


def run_engine(url: str, stream, prompts: list, long_prompt, levels: list[int], max_tokens: int) -> dict:
    """serve_bench's measurements on one server; tokens are the stream events that carry them."""
    asyncio.run(serve_bench.run_streams(url, 2, 4, stream, prompts))  # warm-up: first-call overheads stay out
    out: dict = {}
    for c in levels:
        wall, times = asyncio.run(serve_bench.run_streams(url, c, max_tokens, stream, prompts))
        tokens = sum(len(t) - 1 for t in times)
        out[c] = {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, **serve_bench.latencies(times)}
    out["long"] = asyncio.run(serve_bench.long_prompt_under_load(url, 15, long_prompt, stream, prompts))
    return out


def prompts_as_ids(long_messages: list[dict]) -> tuple[list[list[int]], list[int]]:
    """Our chat prompts, and the long conversation, as the token ids our server renders for them."""
    from nanochat_py import load_tokenizer
    from nanochat_py.conversation import render_for_completion

    tok = load_tokenizer(serve_bench.TOKENIZER)
    short = [render_for_completion(tok, [{"role": "user", "content": p}]) for p in serve_bench.PROMPTS]
    long = render_for_completion(tok, long_messages)
    return short, long


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--install", nargs="?", const=HOME, type=Path, metavar="DIR", help=f"build into DIR ({HOME})")
    p.add_argument("--home", type=Path, default=HOME, help="what --install built")
    p.add_argument("--dtype", default="bf16,int8", help="comma-separated: bf16, int8 (both)")
    p.add_argument("--concurrency", default="1,4,16,32", help="comma-separated stream counts (1,4,16,32)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per reply (64)")
    p.add_argument("--long-prompt", type=int, default=2000, help="tokens in the long prompt (2000)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    if args.install is not None:
        install(args.install)
        return 0
    binary, python = args.home / "bin" / "llama-server", args.home / "venv" / "bin" / "python"
    if not (binary.exists() and python.exists()):
        p.error(f"no llama-server under {args.home}: run with --install first")
    dtypes, levels = args.dtype.split(","), [int(c) for c in args.concurrency.split(",")]
    if unknown := [d for d in dtypes if d not in PAIRS]:
        p.error(f"unknown --dtype: {', '.join(unknown)}")
    if max(levels) > SLOTS:
        p.error(f"at most {SLOTS} streams (llama-server's slots)")

    import torch

    from nanochat_py.config import config_for

    threads = torch.get_num_threads()
    long_messages = serve_bench.long_conversation(args.long_prompt)
    short_ids, long_ids = prompts_as_ids(long_messages)
    report: dict = {"threads": threads, "dtypes": {}}
    ours_stream = serve_bench.one_stream  # a native /chat/completions stream
    with tempfile.TemporaryDirectory(prefix="nanochat-bench-") as tmp:
        source = str(serve_bench.make_model(Path(tmp), "d12"))
        config = config_for("G5", sequence_len=2048, vocab_size=65536, **serve_bench.SHAPES["d12"])
        twin = llama_cpp_peer.llama_shape(config)
        files = {d: llama_cpp_peer.gguf_file(python, llama_cpp_peer.MODELS, "d12", twin, PAIRS[d]) for d in dtypes}
        for dtype in dtypes:
            extra = ["--dtype", dtype, "--max-queue", "64"]
            ours = serve_bench.Server(source, SLOTS, extra)
            try:
                mine = run_engine(ours.url, ours_stream, serve_bench.PROMPTS, long_messages, levels, args.max_tokens)
            finally:
                ours.stop()
            theirs_server = LlamaServer(binary, files[dtype], threads)
            try:
                theirs = run_engine(theirs_server.url, llama_stream, short_ids, long_ids, levels, args.max_tokens)
            finally:
                theirs_server.stop()
            report["dtypes"][dtype] = {"ours": mine, "llama_server": theirs, "gguf": PAIRS[dtype]}
            top = levels[-1]
            print(f"{dtype}: {top} streams ours {mine[top]['tok_s']:.1f} tok/s, llama-server "
                  f"{theirs[top]['tok_s']:.1f}", file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{threads} threads; d12-shaped random weights (ours G5, llama.cpp's a llama twin)\n")
    print("| server, precision | streams | tok/s | vs 1 stream | TTFT p50 / p99 (s) | inter-token p99 (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for dtype, r in report["dtypes"].items():
        print("\n".join(serve_bench.table_rows(r["ours"], levels, f"nanochat-py {dtype}")))
        print("\n".join(serve_bench.table_rows(r["llama_server"], levels, f"llama-server {r['gguf']}")))
    print("\nlong prompt while 15 streams decode: | its TTFT (s) | streams' gap p50 / p99 / max (s) |")
    for dtype, r in report["dtypes"].items():
        for name, side in ((f"nanochat-py {dtype}", r["ours"]), (f"llama-server {r['gguf']}", r["llama_server"])):
            x = side["long"]
            print(f"| {name} | {x['long_ttft_s']:.2f} | {x['gap_p50']:.3f} / {x['gap_p99']:.3f} / {x['gap_max']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
