"""A crafted or broken meta json fails fast, in one short line, before anything is sized from it."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nanochat_py as nc
from conftest import G5

META = json.loads((G5 / "model" / "meta_000042.json").read_text())


def crafted(tmp_path: Path, meta) -> Path:
    """The G5 fixture with its meta json replaced by `meta` (a dict, or raw text)."""
    d = tmp_path / "crafted"
    shutil.copytree(G5 / "model", d)
    (d / "meta_000042.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return d


def with_fields(**fields) -> dict:
    return {**META, "model_config": {**META["model_config"], **fields}}


def assert_fails_fast_in_one_short_line(source: Path, match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(nc.CheckpointError, match=match) as err:
        nc.load(source, device="cpu")
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert "\n" not in message and len(message) < 600, message[:2000]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(n_layer=200_000), "n_layer is 200000 but the weights have 4 layers"),
        (dict(n_layer=10_000), "n_layer is 10000 but the weights have 4 layers"),
        (dict(n_layer=3), "n_layer is 3 but the weights have 4 layers"),
        (dict(sequence_len=1e8), "sequence_len must be a whole number"),
        (dict(n_head=-1), "n_head must be a whole number"),
        (dict(n_head=0), "n_head must be a whole number"),
        (dict(n_head=2.5), "n_head must be a whole number"),
        (dict(n_head=10**12), "n_head must be a whole number"),
        (dict(n_head=64), "transformer.h.0.attn.c_k.weight"),  # head_dim 1: the k/v projections do not fit
        (dict(n_kv_head=3), "not a multiple of n_kv_head=3"),
        (dict(n_embd=128), "n_embd is 128 but transformer.wte.weight is"),
        (dict(n_embd=10**9), "n_embd is 1000000000 but transformer.wte.weight is"),
        (dict(vocab_size=0), "vocab_size must be a whole number"),
        (dict(vocab_size=10**9), "vocab_size must be a whole number|vocab_size 1000000000 is larger"),
        (dict(padded_vocab_size=10**9), "padded_vocab_size is 1000000000 but transformer.wte.weight"),
        (dict(mlp_hidden=10**9), "mlp_hidden is 1000000000 but transformer.h.0.mlp.c_fc.weight"),
        (dict(window_pattern="S" * 1_000_000 + "X"), "may only contain the letters S and L"),
        (dict(generation="G9" * 100_000), "unknown generation"),
    ],
)
def test_crafted_config_fails_fast_with_one_short_line(tmp_path, fields, match):
    assert_fails_fast_in_one_short_line(crafted(tmp_path, with_fields(**fields)), match)


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ("[1, 2, 3]", "is not a JSON object"),
        (json.dumps({"model_config": [1, 2]}), "model_config .* is not a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "cannot read"),
        ("{", "cannot read"),
    ],
)
def test_meta_that_is_not_a_config_is_refused(tmp_path, meta, match):
    assert_fails_fast_in_one_short_line(crafted(tmp_path, meta), match)


def test_many_bad_tensors_are_counted_not_listed(tmp_path):
    state = nc.checkpoint.read_tensors(G5 / "model" / "model_000042.pt")
    state |= {f"extra.{i}.weight": state["smear_lambda"] for i in range(5000)}
    d = crafted(tmp_path, META)
    import torch

    torch.save(state, d / "model_000042.pt")
    assert_fails_fast_in_one_short_line(d, r"unexpected tensors: extra\.0\.weight, .* and 4995 more")


def _limit_memory() -> None:
    # the crafted sequence_len must not size anything: 3 GB of address space is plenty for this model
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_huge_sequence_len_costs_nothing_until_used(tmp_path):
    huge = crafted(tmp_path, with_fields(sequence_len=10**8))
    code = (
        "import nanochat_py as nc, sys\n"
        "hi = [{'role': 'user', 'content': 'hi'}]\n"
        "for source in sys.argv[1:]:\n"
        "    print(repr(nc.load(source, device='cpu').chat(hi, max_tokens=8, temperature=0)))\n"
    )
    env = {**os.environ, "NANOCHAT_PY_KERNELS": "0"}  # the compiled kernels are not under test here
    result = subprocess.run([sys.executable, "-c", code, str(huge), str(G5 / "model")], capture_output=True,
                            text=True, timeout=60, preexec_fn=_limit_memory, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    crafted_reply, reply = result.stdout.splitlines()
    assert crafted_reply == reply  # a short chat never reaches the (now huge) sliding windows
