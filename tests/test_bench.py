"""Speed paths stay exact enough, and `nanochat-py bench` measures what it says (a smoke run; the numbers
that matter are in benchmarks/README.md)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import random_model
from nanochat_py import bench
from nanochat_py.cli import main
from nanochat_py.linear import Linear, linear
from nanochat_py.quantize import Int4Linear, Int8Linear, pack_int4, quantize, quantize_groups, unpack_int4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 8, 40])
def test_decode_linear_matches_f_linear(dtype, rows):
    w, x = torch.randn(300, 64).to(dtype), torch.randn(rows, 1, 64).to(dtype)
    with torch.inference_mode():
        got, want = linear(x, w), F.linear(x, w)
    assert got.shape == want.shape == (rows, 1, 300)
    torch.testing.assert_close(got.float(), want.float(), atol=0.05 if dtype == torch.bfloat16 else 1e-5, rtol=0.01)


@pytest.mark.parametrize("rows", [1, 5, 12])  # the kernel (up to 8 rows) and dequantised F.linear
def test_int8_linear_is_within_quantisation_error(rows):
    w = torch.randn(256, 128)
    layer = Int8Linear(w)
    assert layer.weight.dtype == torch.int8 and layer.scale.dtype == torch.float32 and layer.scale.shape == (256,)
    x = torch.randn(rows, 128)
    with torch.inference_mode():
        got, want = layer(x), F.linear(x, w)
    assert got.dtype == x.dtype
    # per-row int8 keeps each weight within half a step (max|w| / 254 of its row)
    assert (got - want).abs().max() < 0.02 * want.abs().max()


def test_int4_groups_keep_each_weight_within_a_step():
    w = torch.randn(64, 256) * torch.rand(64, 1) * 3
    w[0, :32] = 0.0  # an all-zero group: scale 0, every q 0
    q, scale = quantize_groups(w)
    assert q.dtype == torch.int8 and int(q.min()) >= -8 and int(q.max()) <= 7 and scale.shape == (64, 8)
    step = scale.float().repeat_interleave(32, dim=1)
    error, slack = (q.float() * step - w).abs(), 1e-3 * step.abs()
    # within half a step, but +8 steps (a value as large as the extreme, of the other sign) is clamped to +7
    assert (error <= step.abs() / 2 + slack).logical_or(q == 7).all() and (error <= step.abs() + slack).all()
    # the largest weight of each group is exactly -8 steps (the full range of 4 bits is used)
    assert ((q == -8).view(64, 8, 32).any(-1) | (scale == 0)).all() and (q[0, :32] == 0).all()
    packed, interleaved = pack_int4(q, scale)
    assert packed.dtype == torch.uint8 and packed.shape == (64, 128) and interleaved.shape == (64, 8)
    unpacked, unscale = unpack_int4(packed, interleaved)
    assert torch.equal(unpacked, q) and torch.equal(unscale, scale)
    # the kernel's layout, in blocks of 8 rows: per group 128 bytes, 4 bytes of each row in turn, a row's
    # byte t holding input t (low nibble) and input 16 + t (high); then the block's 8 scales per group.
    # Row 10 is row 2 of block 1; its group 3's byte 5 is in the second run of 4 bytes.
    at = 1 * 8 * 128 + 3 * 128 + 1 * 32 + 2 * 4 + 1
    assert int(packed.flatten()[at]) == (int(q[10, 3 * 32 + 5]) + 8) | ((int(q[10, 3 * 32 + 21]) + 8) << 4)
    assert interleaved.flatten()[1 * 8 * 8 + 3 * 8 + 2] == scale[10, 3]


@pytest.mark.parametrize("rows", [1, 5, 12, 200])  # 200: dequantised for one product with bf16 instructions
def test_int4_linear_is_within_quantisation_error(rows):
    w, x = torch.randn(256, 128), torch.randn(rows, 128)
    layer = Int4Linear(w)
    assert layer.weight.shape == (256, 64) and layer.kernel_scale().dtype == torch.float16
    with torch.inference_mode():
        got, want = layer(x), F.linear(x, w)
    assert got.dtype == x.dtype
    assert (got - want).norm() < 0.15 * want.norm()  # 4 bits: about 8% of each weight's size


def test_quantised_model_keeps_its_activation_dtype():
    model = random_model("G5")
    int8 = quantize(bench.variant_of(model, "bf16"), "int8")
    assert int8.dtype == torch.bfloat16 and isinstance(int8.lm_head, Int8Linear)
    assert type(int8.smear_gate) is not Int8Linear  # a 24-wide gate stays as it is
    assert bench.variant_of(model, "int8").dtype == torch.float32
    int4 = bench.variant_of(model, "int4")  # inputs in groups of 32, rows in blocks of 8: every matrix
    assert int4.dtype == torch.float32 and isinstance(int4.lm_head, Int4Linear)
    block = int4.transformer.h[0]
    assert isinstance(block.mlp.c_proj, Int4Linear) and isinstance(block.attn.c_k, Int4Linear)
    odd = quantize(torch.nn.Sequential(Linear(64, 12), Linear(64, 16)), "int4")  # 12 rows: not blocks of 8
    assert isinstance(odd[0], Int8Linear) and isinstance(odd[1], Int4Linear)
    with pytest.raises(ValueError, match="multiple of 8 rows and of 32 inputs"):
        Int4Linear(torch.randn(1001, 64))
    assert int4.to(torch.bfloat16).lm_head.kernel_scale().dtype == torch.float16, "a cast leaves the scales alone"


def test_transformers_twin_shares_the_tensors_and_computes_the_same_logits():
    pytest.importorskip("transformers")
    model = bench.random_published("d2")
    hf = bench.transformers_twin(model)
    assert hf.lm_head.weight.data_ptr() == model.lm_head.weight.data_ptr()
    ids = torch.randint(0, 65536, (2, 20))
    with torch.inference_mode():
        # fp32 both, but not the same kernels: on some machines and at some moments (the same machine, minutes
        # apart) the CPU's matrix libraries take other paths and the two differ by up to 3e-4; a wrong model
        # would be off by whole units
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-3, rtol=1e-4)
    assert bench.transformers_twin(random_model("G5")) is None  # transformers implements G0 only


def test_teacher_forced_quality_of_a_model_against_itself_is_perfect():
    model = random_model("G2")
    prompts = bench.quality_prompts(model)
    fed, logits = bench.decode_logits(model, prompts, None, 20)
    assert fed.shape == (4, 19) and logits.shape == (4, 20, 1024)
    assert torch.equal(fed[:, 0], logits[:, 0].argmax(-1))  # greedy: each fed token is the previous argmax
    _, again = bench.decode_logits(model, prompts, fed, 20)
    assert bench.agreement(logits, again) == (1.0, 0.0)
    _, int8 = bench.decode_logits(bench.variant_of(model, "int8"), prompts, fed, 20)
    share, worst = bench.agreement(logits, int8)
    assert 0.8 < share <= 1.0 and 0 < worst < 1.0


def test_step_bytes_reads_only_the_window_of_windowed_layers():
    model = random_model("G1w", window_pattern="SL", short_window=10)
    weights = bench.step_bytes(model, 1, 0)
    per_position = 2 * model.config.n_kv_head * model.config.head_dim * 4  # keys and values, fp32
    # 4 layers: S, L, S, L (the last is always L); S reads at most its window + 1 positions
    assert bench.step_bytes(model, 1, 100) - weights == per_position * (11 + 100 + 11 + 100)
    assert bench.step_bytes(model, 3, 5) - weights == 3 * per_position * 4 * 5


def test_bench_smoke_with_transformers(capsys):
    pytest.importorskip("transformers")
    assert main(["bench", "--shape", "d2", "--batch", "1,2", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    engines = [(r["engine"], r["dtype"]) for r in report["results"]]
    assert engines == [("transformers", "fp32"), ("nanochat-py", "fp32"), ("nanochat-py", "bf16"),
                       ("nanochat-py", "int8")]  # fmt: skip
    assert report["bandwidth_gb_s"] > 0 and report["device"] == "cpu"
    for r in report["results"]:
        assert r["prefill_tok_s"] > 0 and r["ttft_s"] > 0 and r["weights_mb"] > 0 and r["peak_memory_mb"] > 0
        assert set(r["decode_tok_s"]) == {"1", "2"} and all(v > 0 for v in r["decode_tok_s"].values())
        # a d2 model sits in the CPU's caches, so its "bandwidth use" can be any positive multiple
        assert all(0 < v < math.inf for v in r["bandwidth_use"].values())
    hf, fp32, bf16, int8 = report["results"]
    assert hf["agreement"] == 1.0 and hf["max_logit_diff"] < 1e-3  # same weights, same model
    assert fp32["agreement"] is None and 0.5 < bf16["agreement"] <= 1 and 0.5 < int8["agreement"] <= 1
    assert int8["weights_mb"] < 0.7 * fp32["weights_mb"]  # the embedding stays fp32; every matrix is int8
    assert bench.table(_as_ints(report)).count("\n") == 5  # summary, header, 4 engines


def _as_ints(report: dict) -> dict:
    """JSON turns the batch keys into strings; the table wants them as they were."""
    for r in report["results"]:
        for key in ("decode_tok_s", "bandwidth_use"):
            r[key] = {int(k): v for k, v in r[key].items()}
    return report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "fp8"], "unknown --dtype fp8"),
        (["--batch", "1,x"], "not a comma-separated list"),
        (["--batch", "0"], "at least 1"),
        (["--compare", "vllm"], "unknown --compare 'vllm'"),
    ],
)
def test_bench_rejects_bad_arguments(capsys, args, message):
    assert main(["bench", "--shape", "d2", *args]) == 2
    assert message in capsys.readouterr().err
