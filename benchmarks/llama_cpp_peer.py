"""nanochat-py's CPU decoding beside llama.cpp's (through llama-cpp-python), on models of the same size, in one run.

llama.cpp cannot run nanochat's architecture, so each of our random-weight published shapes (G0: `--shape d12`,
`d20`; `d2` is a smoke test) gets a llama-architecture twin whose matrices hold as many weights: the same
layers, width, 128-wide heads and 65,536-token vocabulary with an untied lm_head, and a SwiGLU FFN three
matrices of width 2/3 of our relu^2 MLP's (d12: 2048 for our 3072; d20: 3424 for 5120, rounded to a multiple
of 32). Its weights are random too (normal, std 1/sqrt(fan_in); embeddings std 1), written as GGUF once per
precision and cached. The pairs: fp32 - F32, bf16 - BF16, int8 - Q8_0, int4 - Q4_0 (norms stay F32 there).

Measured for each precision, ours then llama.cpp's straight after (memory bandwidth here drifts from minute to
minute), both on as many threads as torch uses:
- prefill: seconds to run a 512-token prompt and take the last position's greedy token (best of 3 after a
  warm-up for llama.cpp; ours is `nanochat_py.bench.ours`, best of at least 2 after a warm-up);
- decode batch 1: tokens/s over 32 single-token greedy steps after a 16-token prompt and one warm-up step.
Ratios read "> 1: nanochat-py is faster" (decode ours/theirs, prefill theirs/ours).

llama.cpp runs with its library defaults (llama_context_default_params: flash attention where it can) but one:
on a CPU with AMX, no AMX buffers unless --amx. A GGML_NATIVE build puts Q8_0/Q4_0 matrices in them there, and
its AMX matmul segfaults on some machines (llama.cpp #20824; the one this was written on is one). Without AMX,
llama.cpp repacks Q4_0 matrices for AVX2 (CPU_REPACK) and leaves the others as they are: so do we.

llama-cpp-python, gguf and numpy live in a virtualenv of their own outside the project (the project needs none
of them); this script runs itself with that venv's Python, in a subprocess, to write GGUF files and to time
llama.cpp, and reads the results back as JSON.

    .venv/bin/python benchmarks/llama_cpp_peer.py --install            # once: builds llama.cpp (~13 min on 2 cores)
    .venv/bin/python benchmarks/llama_cpp_peer.py                      # d12 and d20, all four precisions
    .venv/bin/python benchmarks/llama_cpp_peer.py --shape d2           # a quick check of both engines
    .venv/bin/python benchmarks/llama_cpp_peer.py --shape d12 --dtype int8,int4 --json

--install [DIR] and --venv DIR default to ~/.cache/nanochat-py/llama-cpp-venv; --cache DIR (the GGUF files:
d12 F32 is 0.75 GB, d20 F32 2.2 GB) to ~/.cache/nanochat-py/llama-cpp-models.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "nanochat-py"
VENV = CACHE / "llama-cpp-venv"
MODELS = CACHE / "llama-cpp-models"
PACKAGES = ["llama-cpp-python==0.3.36", "gguf", "numpy"]
PAIRS = {"fp32": "F32", "bf16": "BF16", "int8": "Q8_0", "int4": "Q4_0"}  # our dtype -> GGUF tensor type
FILE_TYPES = {"F32": "ALL_F32", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0", "Q4_0": "MOSTLY_Q4_0"}
STEPS = 32  # timed decode steps
REPEATS = 3  # llama.cpp prefills timed (after one warm-up)
N_CTX, N_BATCH = 1024, 512  # the 512-token prompt is a single llama.cpp batch, as it is a single forward of ours
MATRICES = r"^(output|blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down)))\.weight$"  # what llama.cpp may repack
GGUF_FORMAT = 2  # part of the cache key: bump it when what write_gguf writes changes
SEED = 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--install", nargs="?", const=VENV, type=Path, metavar="DIR",
                   help=f"create DIR ({VENV}) with llama-cpp-python, gguf and numpy, then exit")  # fmt: skip
    p.add_argument("--venv", type=Path, default=VENV, help="the virtualenv --install made")
    p.add_argument("--cache", type=Path, default=MODELS, help="where the GGUF files are kept")
    p.add_argument("--shape", default="d12,d20", help="comma-separated: d2, d12, d20 (d12,d20)")
    p.add_argument("--dtype", default=",".join(PAIRS), help="comma-separated: fp32, bf16, int8, int4 (all)")
    p.add_argument("--amx", action="store_true", help="let llama.cpp use AMX (it segfaults on some machines)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a job on stdin, in the llama venv
    args = p.parse_args()
    if args.worker:
        job = json.load(sys.stdin)
        print(json.dumps(WORKER_JOBS[job["job"]](job)))
        return
    if args.install is not None:
        install(args.install)
        return
    shapes, dtypes = args.shape.split(","), args.dtype.split(",")
    if unknown := [d for d in dtypes if d not in PAIRS] + [s for s in shapes if s not in ("d2", "d12", "d20")]:
        p.error(f"unknown --shape/--dtype: {', '.join(unknown)}")
    python = args.venv / "bin" / "python"
    if not python.exists():
        p.error(f"no llama.cpp virtualenv at {args.venv}: run with --install first")
    report = compare(python, args.cache, shapes, dtypes, args.amx)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


def install(venv: Path) -> None:
    """A virtualenv outside the project with llama.cpp built for this CPU (GGML_NATIVE: the instruction set it
    has, as a local llama.cpp build gets), gguf and numpy."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON"}
    print(f"building {PACKAGES[0]} from source into {venv} (about 13 minutes on 2 cores)", file=sys.stderr)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-binary", "llama-cpp-python", *PACKAGES]
    subprocess.run(pip, env=env, check=True)
    print(f"done: run this script with --venv {venv}" if venv != VENV else "done", file=sys.stderr)


# --- the parent: our side, and driving the worker ------------------------------------------------------------


def compare(python: Path, cache: Path, shapes: list[str], dtypes: list[str], amx: bool) -> dict:
    import torch

    info = worker(python, {"job": "info"})
    report = {"llama_cpp_python": info["version"], "llama_cpp_system": info["system"], "cpu": cpu_model(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "amx": amx, "shapes": {}}  # fmt: skip
    for shape in shapes:
        report["shapes"][shape] = compare_shape(python, cache, shape, dtypes, amx)
    return report


def compare_shape(python: Path, cache: Path, shape: str, dtypes: list[str], amx: bool) -> dict:
    import gc

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from nanochat_py import bench

    model = bench.random_published(shape)
    twin = llama_shape(model.config)
    # every file before any timing, so that no write (d20's take a minute or two) comes between a pair's timings
    files = {dtype: gguf_file(python, cache, shape, twin, PAIRS[dtype]) for dtype in dtypes}
    bandwidth = bench.Bandwidth(model.device)  # ours reports bandwidth use too: kept in the JSON
    rows = []
    for dtype in dtypes:
        variant = bench.variant_of(model, dtype)
        figures = bench.ours(variant, [1], STEPS, bandwidth, dtype, bench.PROMPT)
        del variant
        gc.collect()
        job = {"job": "measure", "path": str(files[dtype]), "type": PAIRS[dtype], "amx": amx,
               "threads": torch.get_num_threads(), "prompt": bench.PROMPT, "decode_prompt": bench.DECODE_PROMPT,
               "steps": STEPS}  # fmt: skip
        theirs = worker(python, job)
        rows.append(row := _row(dtype, figures, theirs, files[dtype]))
        print(f"{shape} {dtype}: decode ours {row['ours_decode_tok_s']:.1f} tok/s, llama.cpp "
              f"{row['theirs_decode_tok_s']:.1f} tok/s", file=sys.stderr)  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    return {"ours_params": params, "llama_params": llama_params(twin), "llama_shape": twin,
            "bandwidth_gb_s": bandwidth.read_gb_s(), "rows": rows}  # fmt: skip


def _row(dtype: str, figures, theirs: dict, gguf: Path) -> dict:
    """One precision pair's figures; `figures` is bench.ours' (it keeps its bandwidth use and weight bytes too)."""
    return {"dtype": dtype, "gguf_type": PAIRS[dtype], "ours_decode_tok_s": figures.decode_tok_s[1],
            "theirs_decode_tok_s": theirs["decode_tok_s"], "ours_prefill_s": figures.ttft_s,
            "theirs_prefill_s": theirs["prefill_s"], "ours_bandwidth_use": figures.bandwidth_use[1],
            "ours_weights_mb": figures.weights_mb, "gguf_mb": gguf.stat().st_size / 2**20}  # fmt: skip


def llama_shape(config) -> dict:
    """The llama twin of our `config`. SwiGLU has three matrices where our relu^2 MLP has two, so 2/3 the width
    holds as many weights; a multiple of 32, since Q8_0/Q4_0 blocks run along ffn_down's rows."""
    n_ff = round(2 * config.mlp_hidden / 3 / 32) * 32
    return {"n_layer": config.n_layer, "n_embd": config.n_embd, "n_head": config.n_head, "n_kv_head": config.n_kv_head,
            "head_dim": config.head_dim, "n_ff": n_ff, "vocab": config.vocab_size, "rope_base": config.rope_base,
            "norm_eps": 1e-6}  # fmt: skip


def llama_params(s: dict) -> int:
    return sum(_prod(dims) for _, dims, _ in llama_tensors(s))


def gguf_file(python: Path, cache: Path, shape: str, twin: dict, gguf_type: str) -> Path:
    """The cached GGUF of `twin` in `gguf_type`, written (by the worker) where missing."""
    dims = f"L{twin['n_layer']}-E{twin['n_embd']}-H{twin['n_head']}x{twin['head_dim']}-F{twin['n_ff']}-V{twin['vocab']}"
    path = cache / f"llama-{shape}-{dims}-s{SEED}-v{GGUF_FORMAT}-{gguf_type}.gguf"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"writing {path}", file=sys.stderr)
        began = time.perf_counter()
        worker(python, {"job": "write", "path": str(path), "shape": twin, "type": gguf_type, "seed": SEED})
        print(f"  {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return path


def worker(python: Path, job: dict) -> dict:
    """Run `job` in the llama venv: this file with --worker, the job on stdin, its answer the last stdout line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the project's sources are no use there
    command = [str(python), str(Path(__file__).resolve()), "--worker"]
    done = subprocess.run(command, input=json.dumps(job), stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode:  # its traceback, or llama.cpp's own message, is on stderr already
        raise SystemExit(f"the llama.cpp worker failed ({job['job']}): exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def markdown(report: dict) -> str:
    amx = "AMX allowed" if report["amx"] else "no AMX buffers (--amx allows them)"
    lines = [f"llama-cpp-python {report['llama_cpp_python']}, torch {report['torch']}, {report['cpu']}, "
             f"{report['threads']} threads", f"llama.cpp ({amx}): {report['llama_cpp_system']}"]  # fmt: skip
    for shape, r in report["shapes"].items():
        s = r["llama_shape"]
        lines += ["", f"### {shape}: nanochat-py {r['ours_params'] / 1e6:.1f}M parameters, llama.cpp twin "
                  f"{r['llama_params'] / 1e6:.1f}M ({s['n_layer']} layers, {s['n_embd']} wide, SwiGLU {s['n_ff']}); "
                  f"bandwidth ~{r['bandwidth_gb_s']:.1f} GB/s", "",
                  "| precision | decode b1 tok/s: ours | llama.cpp | ours/llama.cpp | prefill-512 s: ours "
                  "| llama.cpp | llama.cpp/ours |", "|---|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
        for row in r["rows"]:
            ours_tok, theirs_tok = row["ours_decode_tok_s"], row["theirs_decode_tok_s"]
            ours_s, theirs_s = row["ours_prefill_s"], row["theirs_prefill_s"]
            decode = f"{ours_tok:.1f} | {theirs_tok:.1f} | {ours_tok / theirs_tok:.2f}"
            prefill = f"{ours_s:.3f} | {theirs_s:.3f} | {theirs_s / ours_s:.2f}"
            lines.append(f"| {row['dtype']} / {row['gguf_type']} | {decode} | {prefill} |")
    return "\n".join(lines)


# --- the worker: runs in the llama venv (gguf, numpy, llama_cpp; no torch, no nanochat_py) ---------------------


def llama_tensors(s: dict) -> list[tuple[str, tuple[int, ...], float | None]]:
    """(name, numpy shape [out, in], std) of every tensor, in file order; std None: an RMSNorm weight of ones."""
    e, v, q, kv, ff = s["n_embd"], s["vocab"], s["n_head"] * s["head_dim"], s["n_kv_head"] * s["head_dim"], s["n_ff"]
    tensors = [("token_embd.weight", (v, e), 1.0)]
    for i in range(s["n_layer"]):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", (e,), None), (b + "attn_q.weight", (q, e), e**-0.5),
                    (b + "attn_k.weight", (kv, e), e**-0.5), (b + "attn_v.weight", (kv, e), e**-0.5),
                    (b + "attn_output.weight", (e, q), q**-0.5), (b + "ffn_norm.weight", (e,), None),
                    (b + "ffn_gate.weight", (ff, e), e**-0.5), (b + "ffn_up.weight", (ff, e), e**-0.5),
                    (b + "ffn_down.weight", (e, ff), ff**-0.5)]  # fmt: skip
    return [*tensors, ("output_norm.weight", (e,), None), ("output.weight", (v, e), e**-0.5)]


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def write_gguf(job: dict) -> dict:
    """Stream the file tensor by tensor (d20's F32 would be 2.2 GB in memory), to a temporary name renamed when
    complete, so that an interrupted run never leaves a truncated file in the cache."""
    import gguf
    import numpy as np

    s, path, kind = job["shape"], Path(job["path"]), gguf.GGMLQuantizationType[job["type"]]
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tensors = llama_tensors(s)
    writer = gguf.GGUFWriter(tmp, "llama")
    try:
        _metadata(writer, s, gguf.LlamaFileType[FILE_TYPES[job["type"]]])
        for name, dims, std in tensors:
            t = kind if std is not None else gguf.GGMLQuantizationType.F32
            block, size = gguf.GGML_QUANT_SIZES[t]
            writer.add_tensor_info(name, dims, np.dtype(np.float32), _prod(dims) // block * size, raw_dtype=t)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (_, dims, std) in enumerate(tensors):
            if std is None:
                writer.write_tensor_data(np.ones(dims, np.float32))
                continue
            # seeded per tensor: every precision quantises the very same weights
            weights = np.random.default_rng([job["seed"], i]).standard_normal(dims, dtype=np.float32)
            writer.write_tensor_data(gguf.quants.quantize(weights * np.float32(std), kind))
        writer.close()
        os.replace(tmp, path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return {"path": str(path)}


def _metadata(writer, s: dict, file_type) -> None:
    import gguf

    writer.add_context_length(2048)
    writer.add_embedding_length(s["n_embd"])
    writer.add_block_count(s["n_layer"])
    writer.add_feed_forward_length(s["n_ff"])
    writer.add_head_count(s["n_head"])
    writer.add_head_count_kv(s["n_kv_head"])
    writer.add_rope_dimension_count(s["head_dim"])
    writer.add_rope_freq_base(s["rope_base"])
    writer.add_layer_norm_rms_eps(s["norm_eps"])
    writer.add_vocab_size(s["vocab"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # llama.cpp loads no model without a vocabulary: a byte-level BPE ("gpt2") one of unique pieces will do. It
    # must come with a merges list, and gguf writes no empty array: one merge, " " + "t" (the piece after the bytes)
    tokens = _pieces(s["vocab"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL])
    writer.add_token_merges([" ".join(tokens[256])])
    writer.add_bos_token_id(len(tokens) - 1)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_add_bos_token(False)


def _pieces(n: int) -> list[str]:
    """n unique token strings: the 256 byte-level symbols first (printable latin-1 bytes stand for themselves, the
    others for U+0100 onwards, as in GPT-2), " t" (their first merge), made-up pieces, and last <|endoftext|>
    (a name llama.cpp knows as an end of generation: it warns about an end-of-sequence token it does not know)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    others = iter(range(256, 512))
    symbols = [chr(b) if b in printable else chr(next(others)) for b in range(256)]
    return [*symbols, symbols[ord(" ")] + "t", *(f"<|piece{i}|>" for i in range(257, n - 1)), "<|endoftext|>"]


def measure(job: dict) -> dict:
    """llama.cpp's prefill seconds and batch-1 decode tokens/s, on the same protocol as `bench.ours`. Through the
    C API llama-cpp-python binds (its Llama class cannot set the buffer types: see _model_params)."""
    import llama_cpp as lc
    import numpy as np

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # what Llama(verbose=False) does: errors only
    lc.llama_backend_init()
    params, keep = _model_params(lc, job)
    model = lc.llama_model_load_from_file(job["path"].encode(), params)
    context = lc.llama_context_default_params()
    context.n_ctx, context.n_batch, context.n_ubatch = N_CTX, N_BATCH, N_BATCH
    context.n_threads = context.n_threads_batch = job["threads"]
    ctx = lc.llama_init_from_model(model, context)
    if not model or not ctx:
        raise RuntimeError(f"llama.cpp could not load {job['path']}")
    vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    memory = lc.llama_get_memory(ctx)

    def forward(tokens: list[int]) -> int:
        """Run `tokens` after the cached ones; the argmax of the last logits (ours takes it after each forward)."""
        ids = (lc.llama_token * len(tokens))(*tokens)  # a name keeps it alive: the batch only points at it
        if lc.llama_decode(ctx, lc.llama_batch_get_one(ids, len(tokens))):
            raise RuntimeError("llama_decode failed")
        return int(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(vocab,)).argmax())

    def prefill() -> float:
        lc.llama_memory_clear(memory, True)  # back to position 0, no cached keys/values
        began = time.perf_counter()
        forward(prompt)
        return time.perf_counter() - began

    prompt = np.random.default_rng(1).integers(0, vocab, job["prompt"]).tolist()
    prefill()  # warm-up: llama.cpp mmaps the file, so the first pass also reads it in
    prefill_s = min(prefill() for _ in range(REPEATS))
    lc.llama_memory_clear(memory, True)
    token = forward(prompt[: job["decode_prompt"]])
    token = forward([token])  # warm-up step
    began = time.perf_counter()
    for _ in range(job["steps"]):
        token = forward([token])
    decode_tok_s = job["steps"] / (time.perf_counter() - began)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    del keep
    return {"prefill_s": prefill_s, "decode_tok_s": decode_tok_s}


class _Override(ctypes.Structure):  # llama.h's llama_model_tensor_buft_override
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _model_params(lc, job: dict) -> tuple[object, object]:
    """llama.cpp's default model parameters, but for AMX unless `job["amx"]`: on a CPU with AMX-INT8 llama.cpp
    puts Q8_0/Q4_0 matrices in AMX buffers, and its AMX matmul segfaults on some of them (llama.cpp #20824; so
    it does on the machine this was written on). Without AMX, llama.cpp (x86) keeps F32, BF16 and Q8_0 matrices
    in plain CPU buffers and repacks Q4_0 ones (CPU_REPACK, 8x8 interleaved for AVX2): so do we there.
    Returns (params, what must outlive the model load)."""
    params = lc.llama_model_default_params()
    if job["amx"] or b"AMX_INT8 = 1" not in lc.llama_print_system_info():
        return params, None
    params.use_extra_bufts = False  # AMX and CPU_REPACK both: the latter comes back through an override
    repack = _repack_buffer_type() if job["type"] == "Q4_0" else None
    if repack is None:
        return params, None
    overrides = (_Override * 2)((MATRICES.encode(), repack), (None, None))  # NULL-terminated
    params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
    return params, overrides


def _repack_buffer_type() -> int | None:
    """The CPU_REPACK buffer type, found as llama.cpp's --override-tensor finds it: by name, among the CPU
    device's extra buffer types (None where there is none)."""
    try:  # the libraries libllama loaded (by soname): opening the files anew would load a second, separate registry
        ggml = ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOLOAD)
        base = ctypes.CDLL("libggml-base.so.0", mode=os.RTLD_NOLOAD)
    except OSError:
        return None
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    cpu = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    reg = base.ggml_backend_dev_backend_reg(cpu)
    address = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return None
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(cpu)
    i = 0
    while bufts[i]:
        if base.ggml_backend_buft_name(bufts[i]) == b"CPU_REPACK":
            return bufts[i]
        i += 1
    return None


def info(job: dict) -> dict:
    import llama_cpp

    system = llama_cpp.llama_print_system_info().decode()
    return {"version": llama_cpp.__version__, "system": " ".join(system.split())}


WORKER_JOBS = {"info": info, "write": write_gguf, "measure": measure}


if __name__ == "__main__":
    main()
