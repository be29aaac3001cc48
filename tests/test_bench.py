"""Speed paths stay exact enough, and `nanochat-py bench` runs end to end (a smoke run; the numbers that
matter are in benchmarks/README.md, measured on a quiet machine)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import random_model
from nanochat_py import bench
from nanochat_py.cli import main
from nanochat_py.linear import linear
from nanochat_py.quantize import Int8Linear, quantize_int8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 8, 40])
def test_decode_linear_matches_f_linear(dtype, rows):
    w, x = torch.randn(300, 64).to(dtype), torch.randn(rows, 1, 64).to(dtype)
    with torch.inference_mode():
        got, want = linear(x, w), F.linear(x, w)
    assert got.shape == want.shape == (rows, 1, 300)
    torch.testing.assert_close(got.float(), want.float(), atol=0.05 if dtype == torch.bfloat16 else 1e-5, rtol=0.01)


def test_int8_linear_is_within_quantisation_error():
    w = torch.randn(256, 128)
    layer = Int8Linear(w)
    assert layer.weight.dtype == torch.int8 and layer.scale.shape == (256,)
    for rows in (1, 5):
        x = torch.randn(rows, 128)
        with torch.inference_mode():
            got, want = layer(x), F.linear(x, w)
        assert got.dtype == x.dtype
        # per-row int8 keeps each weight within half a step (max|w|/254); bf16 activations add ~0.4%
        assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_quantised_model_decodes_like_fp32():
    model = random_model("G5")
    reference = bench.variant_of(model, "fp32")
    agreement, worst = bench.quality(reference, bench.variant_of(model, "int8"), prompts=2, tokens=64)
    assert agreement > 0.9
    assert 0 < worst < 2.0
    int8 = quantize_int8(bench.variant_of(model, "bf16"))
    assert int8.dtype == torch.bfloat16 and isinstance(int8.lm_head, Int8Linear)


def test_bench_smoke_with_transformers(capsys):
    pytest.importorskip("transformers")
    assert main(["bench", "--shape", "d2", "--batch", "1,2", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    engines = [(r["engine"], r["dtype"]) for r in report["results"]]
    assert engines == [("transformers", "fp32"), ("nanochat-py", "fp32"), ("nanochat-py", "bf16"),
                       ("nanochat-py", "int8")]  # fmt: skip
    assert report["bandwidth_gb_s"] > 0
    for r in report["results"]:
        assert r["prefill_tok_s"] > 0 and r["ttft_s"] > 0
        assert set(r["decode_tok_s"]) == {"1", "2"} and all(v > 0 for v in r["decode_tok_s"].values())
        assert all(0 < v < 5 for v in r["bandwidth_use"].values())
    assert all(0 <= r["agreement"] <= 1 for r in report["results"][2:])
    assert bench.table(_as_ints(report)).count("\n") == 5  # summary, header, 4 engines


def _as_ints(report: dict) -> dict:
    """JSON turns the batch keys into strings; the table wants them as they were."""
    for r in report["results"]:
        for key in ("decode_tok_s", "bandwidth_use"):
            r[key] = {int(k): v for k, v in r[key].items()}
    return report


def test_bench_rejects_an_unknown_dtype(capsys):
    assert main(["bench", "--shape", "d2", "--dtype", "fp8"]) == 2
    assert "unknown --dtype fp8" in capsys.readouterr().err
