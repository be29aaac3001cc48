"""A d32 on a laptop: can a 1.9B-parameter nanochat model load and decode in 16 GB?

Writes a d32-shaped checkpoint (nanochat's published d32: G0, 32 layers, 2048 wide, 65,536-token vocab) with
random bf16 weights, as a download would arrive, then in a fresh process per dtype: `nanochat_py.load(dir,
dtype=...)`, a 16-token prompt and 32 greedy decode steps. Prints, per dtype, the weights' bytes in memory,
the process's peak RSS (loading included) and the decode rate.

    .venv/bin/python benchmarks/quantized_d32.py [--dtype int4,int8] [--dir DIR]   # about 3 min
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer-65k" / "tokenizer.pkl"
D32 = {"sequence_len": 2048, "vocab_size": 65536, "n_layer": 32, "n_head": 16, "n_kv_head": 16, "n_embd": 2048}


def write_checkpoint(out: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import save_file

    from nanochat_py.config import config_for
    from nanochat_py.model import GPT

    with torch.device("meta"):
        model = GPT(config_for("G0", **D32))
    torch.manual_seed(0)
    state = {}
    for name, p in model.state_dict().items():
        std = 1.0 if p.dim() < 2 or "wte" in name else p.shape[1] ** -0.5
        state[name] = (torch.randn(p.shape) * std).to(torch.bfloat16)
    save_file(state, str(out / "model_000000.safetensors"))
    (out / "meta_000000.json").write_text(json.dumps({"step": 0, "model_config": D32}))
    shutil.copy(TOKENIZER, out / "tokenizer.pkl")


def measure(source: str, dtype: str) -> dict:
    """Run in its own process, so its peak RSS is this dtype's alone."""
    import torch

    import nanochat_py

    began = time.perf_counter()
    bot = nanochat_py.load(source, device="cpu", dtype=dtype)
    load_s = time.perf_counter() - began
    weights = sum(t.numel() * t.element_size() for t in bot.model.state_dict().values())
    prompt = list(range(100, 116))
    steps, began = 0, None
    with torch.inference_mode():
        for _ in bot.engine.generate(prompt, 1, 33, temperature=0.0):
            if began is None:
                began = time.perf_counter()  # from the first decoded token: prefill excluded
            else:
                steps += 1
    decode_s = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return {"dtype": dtype, "weights_mb": round(weights / 2**20), "peak_rss_mb": round(peak),
            "load_s": round(load_s, 1), "decode_tok_s": round(steps / decode_s, 2)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="int4,int8", help="comma-separated: int4, int8, bf16, fp32")
    p.add_argument("--dir", default=None, help="keep the checkpoint here (written once, reused)")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one dtype, this process
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.dir, args.measure)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "model_000000.safetensors").is_file():
            write_checkpoint(out)
        print(f"d32 checkpoint: {sum(f.stat().st_size for f in out.iterdir()) / 2**20:,.0f} MB in {out}")
        for dtype in args.dtype.split(","):
            done = subprocess.run([sys.executable, __file__, "--dir", str(out), "--measure", dtype.strip()],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            print(done.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
