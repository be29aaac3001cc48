"""The compiled decode kernels compute what the plain torch ops compute: each op against its torch
definition (the native build, the AVX2 build and the portable one), and whole decode steps of every generation."""

from __future__ import annotations

import logging
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch.utils import cpp_extension

from conftest import random_model
from nanochat_py import bench, kernels, linear, quantize
from nanochat_py.config import GENERATIONS
from nanochat_py.linear import KERNEL_ROWS
from nanochat_py.quantize import Int4Linear, Int8Linear

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to build the kernels")


@pytest.fixture(scope="module", params=kernels.VARIANTS)
def ops(request):
    if request.param == "avx2" and not torch.cpu._is_avx512_supported():
        pytest.skip("without AVX-512 the native build is the AVX2 one")
    built = kernels.build(request.param)
    assert built is not None, "the kernels failed to build (see the warning above)"
    return built


def _int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().amax(1) / 127
    return (w / scale[:, None]).round().to(torch.int8), scale


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 11, 17])
@pytest.mark.parametrize("width", [32, 96, 768])
def test_linear_rows_matches_f_linear(ops, rows, width):
    x = torch.randn(rows, width)
    weights = [torch.randn(n, width) for n in (257, 64, 3)]  # odd row counts: leftovers of every block size
    for got, w in zip(ops.linear_rows(x, weights, [None] * 3), weights, strict=True):
        torch.testing.assert_close(got, F.linear(x, w), atol=1e-4 * width**0.5, rtol=1e-5)

    xb, wb = x.bfloat16(), [w.bfloat16() for w in weights]
    for got, w in zip(ops.linear_rows(xb, wb, [None] * 3), wb, strict=True):
        want = F.linear(xb.float(), w.float())  # exact products, fp32 sums; the kernel rounds once to bf16
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, atol=1e-3 * width**0.5, rtol=8e-3)

    quantised = [_int8(w) for w in weights]
    outs = ops.linear_rows(x, [q for q, _ in quantised], [s for _, s in quantised])
    for got, (q, s) in zip(outs, quantised, strict=True):
        want = F.linear(x, q.float() * s[:, None])
        # activations go through int16 (one scale per row): relative error ~1e-4 of the row's largest |x|
        assert (got - want).abs().max() <= 2e-4 * want.abs().max() + 1e-6


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 11, 70])  # 70: a prefill's passes of 8 rows over weight tiles
@pytest.mark.parametrize("width", [32, 96, 768])
def test_linear_rows_int4_matches_its_dequantised_weights(ops, rows, width):
    x = torch.randn(rows, width) * torch.linspace(0.1, 3, width)  # groups of very different sizes
    weights = [Int4Linear(torch.randn(n, width)) for n in (264, 64, 8)]  # blocks of 8 rows: 33, 8 and 1
    outs = ops.linear_rows(x, [w.weight for w in weights], [w.kernel_scale() for w in weights])
    step = x.view(rows, -1, 32).abs().amax(-1, keepdim=True).expand(-1, -1, 32).reshape(rows, width) / 127
    for got, w in zip(outs, weights, strict=True):
        dequantised = w.dequantized(torch.float32)
        want = F.linear(x, dequantised)
        # activations go through int8 in runs of 32 (each within half its run's step): the only error
        bound = F.linear(step / 2, dequantised.abs()) * 1.001 + 1e-4
        assert got.shape == want.shape and ((got - want).abs() <= bound).all()
    got_bf16 = ops.linear_rows(x.bfloat16(), [weights[0].weight], [weights[0].kernel_scale()])[0]
    assert got_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(got_bf16.float(), outs[0], atol=0.02 * outs[0].abs().max().item(), rtol=0.01)


def test_dequantize_is_the_layers_own_dequantised_weight(ops):
    w = torch.randn(40, 256)
    for layer in (Int4Linear(w), Int8Linear(w)):
        for dtype in (torch.float32, torch.bfloat16):
            got = ops.dequantize(layer.weight, layer.kernel_scale(), dtype)
            assert got.dtype == dtype and torch.equal(got, layer.dequantized(dtype)), (type(layer), dtype)
    with pytest.raises(RuntimeError, match="fp16 scale per 32"):
        ops.dequantize(Int4Linear(w).weight, torch.zeros(40, 8), torch.float32)
    with pytest.raises(RuntimeError, match="to fp32 or bf16"):
        ops.dequantize(Int8Linear(w).weight, Int8Linear(w).kernel_scale(), torch.float16)


@pytest.mark.parametrize("layer_type", [Int8Linear, Int4Linear])
def test_quantised_prefill_is_one_product_over_the_dequantised_matrix(layer_type):
    layer = layer_type(torch.randn(96, 256))
    if math.isinf(layer.matmul_rows):
        pytest.skip("without bf16 instructions int4 runs its kernel for any number of rows")
    x = torch.randn(layer.matmul_rows + 1, 256)
    dtype = torch.bfloat16 if quantize.BF16_MATMUL else torch.float32
    with torch.inference_mode():
        got = layer(x)
        by_rows = torch.cat([layer(x[i : i + 1]) for i in range(len(x))])  # the row kernel, one row at a time
    assert got.dtype == torch.float32 and torch.equal(got.to(dtype).float(), got)  # computed in `dtype`
    # x and the weights as the product sees them, fp32 sums, the result rounded to the product's dtype
    want = F.linear(x.to(dtype).float(), layer.dequantized(dtype).float()).to(dtype).float()
    torch.testing.assert_close(got, want, atol=1e-3, rtol=8e-3)
    # the row kernel keeps finer activations: the two differ by about bf16's rounding, no more
    assert (got - by_rows).abs().max() <= 0.02 * by_rows.abs().max()


def test_bf16_products_of_many_rows_run_in_fp32_where_the_cpu_lacks_bf16_instructions(monkeypatch):
    # torch's bf16 product there ran 6-7x slower than widening the weight for oneDNN's fp32 one
    x, w = torch.randn(64, 256).bfloat16(), torch.randn(96, 256).bfloat16()
    want = F.linear(x.float(), w.float()).bfloat16()  # exact inputs, fp32 sums, rounded once to bf16
    monkeypatch.setattr(linear, "BF16_MATMUL", False)
    monkeypatch.setattr(linear.F, "linear", lambda *a: pytest.fail("torch's bf16 product ran"))
    with torch.inference_mode():
        got = linear.linear(x, w)
        monkeypatch.setattr(linear, "BF16_MATMUL", True)
        with pytest.raises(pytest.fail.Exception, match="bf16 product ran"):
            linear.linear(x, w)  # with bf16 instructions, torch's own bf16 product
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=1e-2, rtol=8e-3)  # at most a bf16 rounding apart


def test_linear_rows_refuses_mismatched_inputs(ops):
    x = torch.randn(1, 64)
    with pytest.raises(RuntimeError, match="contiguous CPU"):
        ops.linear_rows(x, [torch.randn(8, 96)], [None])
    with pytest.raises(RuntimeError, match="multiple of 32"):
        ops.linear_rows(torch.randn(1, 40), [torch.randn(8, 40)], [None])
    with pytest.raises(RuntimeError, match="scale per row"):
        ops.linear_rows(x, [torch.zeros(8, 64, dtype=torch.int8)], [None])
    with pytest.raises(RuntimeError, match="blocks of 8 rows"):
        ops.linear_rows(x, [torch.zeros(12, 32, dtype=torch.uint8)], [torch.zeros(12, 2, dtype=torch.float16)])
    with pytest.raises(RuntimeError, match="scale per 32 inputs"):
        ops.linear_rows(x, [torch.zeros(8, 32, dtype=torch.uint8)], [torch.zeros(8, 2)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_torch(ops, dtype):
    x = torch.randn(3, 1, 200).to(dtype) * 3
    got, want = ops.rms_norm(x, 1e-6), F.rms_norm(x.float(), (200,), eps=1e-6)
    assert got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.float(), want, atol=1e-5 if dtype == torch.float32 else 0.02, rtol=1e-5)


def _decode(model, ids: torch.Tensor, prefill: int, per_row: bool) -> torch.Tensor:
    """Logits of every decode step after a prefill, in shared-position or per-row mode."""
    B, total = ids.shape
    if per_row:  # each row prefilled separately, to a different length, then decoded together
        cache = model.new_cache(B, total, per_row=True)
        for b in range(B):
            one = model.new_cache(1, total)
            model(ids[b : b + 1, : prefill - b], cache=one)
            cache.load_row(b, one)
        starts = [prefill - b for b in range(B)]
        steps = total - prefill
        return torch.cat([model(torch.stack([ids[b, s + t] for b, s in enumerate(starts)])[:, None], cache=cache)
                          for t in range(steps)], dim=1)  # fmt: skip
    cache = model.new_cache(B, total)
    model(ids[:, :prefill], cache=cache)
    return torch.cat([model(ids[:, t : t + 1], cache=cache) for t in range(prefill, total)], dim=1)


@pytest.mark.parametrize("generation", GENERATIONS)
@pytest.mark.parametrize("per_row", [False, True], ids=["shared", "per-row"])
@torch.inference_mode()
def test_kernel_decode_equals_torch_decode(generation, per_row):
    # short windows passed many times over, grouped KV heads, 3 rows
    model = random_model(generation, short_window=12, n_kv_head=2)
    ids = torch.randint(0, model.config.vocab_size, (3, 60))
    assert kernels.ops() is not None
    fast = _decode(model, ids, 20, per_row)
    with kernels.switched_off():
        assert kernels.ops() is None
        plain = _decode(model, ids, 20, per_row)
    torch.testing.assert_close(fast, plain, atol=2e-5, rtol=0)


@pytest.mark.parametrize("head_dim", [16, 48, 64, 128, 256])  # 64/128/256 take the AVX-512 loops, 16/48 the plain one
@torch.inference_mode()
def test_kernel_attention_equals_torch_at_every_head_width(head_dim):
    model = random_model("G5", n_head=2, n_kv_head=1, n_embd=2 * head_dim, short_window=12)
    ids = torch.randint(0, model.config.vocab_size, (2, 40))  # 21-40 keys: every remainder of 4 keys
    fast = _decode(model, ids, 21, per_row=True)
    with kernels.switched_off():
        plain = _decode(model, ids, 21, per_row=True)
    torch.testing.assert_close(fast, plain, atol=2e-5, rtol=0)
    bf16 = bench.variant_of(model, "bf16")
    fast = _decode(bf16, ids, 21, per_row=True).float()
    with kernels.switched_off():
        plain = _decode(bf16, ids, 21, per_row=True).float()
    assert (fast - plain).abs().max() < 0.05 * plain.abs().max()


@torch.inference_mode()
def test_bf16_int8_and_int4_kernel_decode_stay_close_to_fp32():
    model = random_model("G5", short_window=12, n_embd=128)
    ids = torch.randint(0, model.config.vocab_size, (2, 50))
    reference = _decode(model, ids, 10, per_row=False)
    for dtype, tolerance in (("bf16", 0.15), ("int8", 0.15), ("int4", 0.4)):
        variant = bench.variant_of(model, dtype)
        got = _decode(variant, ids, 10, per_row=False).float()
        assert (got - reference).abs().max() < tolerance * reference.abs().max(), dtype
        with kernels.switched_off():  # the same quantised model through dequantised F.linear
            plain = _decode(variant, ids, 10, per_row=False).float()
        # bf16: roundings in another order; int8: activations in int16; int4: activations in int8
        closeness = {"bf16": 0.05, "int8": 0.01, "int4": 0.05}[dtype]  # measured on seeds 0-2: 0.021, 1e-4, 0.014
        assert (got - plain).abs().max() < closeness * reference.abs().max(), dtype


@torch.inference_mode()
def test_blocks_remake_their_kernel_arguments_when_their_layers_change():
    # a block keeps the weights and scales it hands the kernel between steps (model.Block.kernel_weights);
    # new weights loaded into it, or new layers put in (quantize), after it has decoded must be the ones used
    model, other = (random_model("G5", seed=seed, short_window=12, n_embd=128) for seed in (0, 1))
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    want, want_int4 = _decode(other, ids, 12, per_row=False), _decode(bench.variant_of(other, "int4"), ids, 12, False)
    _decode(model, ids, 12, per_row=False)
    model.load_state_dict(other.state_dict(), assign=True)  # the same layers, new tensors
    assert torch.equal(_decode(model, ids, 12, per_row=False), want)
    assert torch.equal(_decode(quantize.quantize(model, "int4"), ids, 12, per_row=False), want_int4)  # new layers


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@torch.inference_mode()
def test_quantised_models_keep_a_bf16_cache_that_the_kernels_decode_over(dtype):
    fp32 = random_model("G5", short_window=12, n_embd=128)
    model = bench.variant_of(fp32, dtype)
    rows = KERNEL_ROWS + 4  # a server's batch: more rows than fp32 weights take the kernel for
    cache = model.new_cache(rows, 50, per_row=True)
    assert model.dtype == torch.float32 and cache.k.dtype == cache.v.dtype == torch.bfloat16
    # fp32 activations, but int8/int4 matrices: the whole block runs on the kernel (torch's attention over a
    # long row's cache cost a 16-stream int8 server 0.7 s a step)
    assert model._kernel_step(torch.zeros(rows, 1, 128), cache, torch.zeros(rows, dtype=torch.long)) is not None
    fp32_cache = fp32.new_cache(rows, 50, per_row=True)
    assert fp32._kernel_step(torch.zeros(rows, 1, 128), fp32_cache, torch.zeros(rows, dtype=torch.long)) is None
    ids = torch.randint(0, model.config.vocab_size, (rows, 40))
    fast = _decode(model, ids, 20, per_row=True)
    with kernels.switched_off():  # torch's attention over the same bf16 cache, in fp32
        plain = _decode(model, ids, 20, per_row=True)
    assert (fast - plain).abs().max() < 0.05 * plain.abs().max()


def test_a_failed_build_falls_back_to_torch_and_is_not_retried_by_runs(monkeypatch, caplog, tmp_path):
    def broken(**_):
        raise RuntimeError("Error building extension 'x': c++: not found")

    monkeypatch.setenv("NANOCHAT_PY_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setattr(kernels, "_loaded", {})
    with caplog.at_level(logging.WARNING, logger="nanochat_py"):
        assert kernels.build() is None
    assert "could not be built (Error building extension 'x': c++: not found)" in caplog.text
    assert not list(tmp_path.glob("*.tmp-*")), "the failed build's work directory is removed"

    monkeypatch.setattr(kernels, "_start_background_build", lambda target: pytest.fail("a known failure is retried"))
    monkeypatch.setattr(kernels, "_loaded", {})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nanochat_py"):
        assert kernels.ops() is None
    assert "failed to build earlier (Error building extension 'x': c++: not found" in caplog.text
    model = random_model("G0")
    with torch.inference_mode():  # decoding still works, on plain torch ops
        cache = model.new_cache(1, 8)
        model(torch.zeros(1, 4, dtype=torch.long), cache=cache)
        assert model(torch.zeros(1, 1, dtype=torch.long), cache=cache).shape == (1, 1, 1024)
