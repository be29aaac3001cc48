"""`nanochat-py bench`: how fast a model prefills and decodes, how close decoding comes to the memory
bandwidth, and the same figures for transformers on the very same weights, in one run.

Decode speed is measured on the model itself (static KV cache, greedy), so random-weight models of the
published shapes (`--shape d12|d20|d32`) need no tokenizer and no download. Bandwidth utilisation is
the bytes a decode step must read (every matrix it multiplies plus the KV cache) over the step time,
divided by the best read rate this run measures for a large matrix-vector product.
"""

from __future__ import annotations

import functools
import gc
import json
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .checkpoint import _transformers_fields, normalise_keys
from .config import config_for
from .linear import linear
from .model import GPT
from .quantize import quantize_int8

SHAPES = {"d2": 2, "d12": 12, "d20": 20, "d32": 32}  # G0 shapes (d12/d20/d32 published; d2 is a smoke test)
PROMPT = 512  # prefill length
DECODE_PROMPT = 16  # context before timed decode steps


@dataclass
class Figures:
    engine: str
    dtype: str
    prefill_tok_s: float = 0.0
    ttft_s: float = 0.0
    decode_tok_s: dict[int, float] = field(default_factory=dict)  # batch -> aggregate tokens/s
    bandwidth_use: dict[int, float] = field(default_factory=dict)  # batch -> share of the measured bandwidth
    peak_rss_mb: float = 0.0
    agreement: float | None = None  # greedy tokens equal to fp32's (teacher-forced), share
    max_logit_diff: float | None = None


def random_published(shape: str, seed: int = 0):
    """A transformers NanoChatForCausalLM of a published shape with random weights (our GPT if no transformers)."""
    depth = SHAPES[shape]
    heads = max(1, depth // 2)  # 64 * depth wide in 128-wide heads
    fields = dict(vocab_size=65536, n_layer=depth, n_embd=64 * depth, n_head=heads, n_kv_head=heads,
                  sequence_len=2048)  # fmt: skip
    torch.manual_seed(seed)
    try:
        import transformers
    except ImportError:
        model = GPT(config_for("G0", **fields))
        _randomise(model)
        return model, None
    hf_config = transformers.NanoChatConfig(
        vocab_size=65536, hidden_size=64 * depth, intermediate_size=256 * depth, num_hidden_layers=depth,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
        final_logit_softcapping=15.0, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    hf = transformers.NanoChatForCausalLM(hf_config).eval().requires_grad_(False)
    _randomise(hf)
    return ours_from_transformers(hf), hf


@torch.no_grad()
def _randomise(model: torch.nn.Module) -> None:
    """Unit-variance activations everywhere, so logits are far from ties (init leaves them near zero)."""
    for name, p in model.named_parameters():
        if p.dim() == 2 and "embed" not in name and "wte" not in name:
            p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
        else:
            p.normal_(0.0, 1.0)


def ours_from_transformers(hf) -> GPT:
    """Our GPT on the SAME tensors as a transformers model (no copy)."""
    state = normalise_keys(dict(hf.state_dict()), "transformers")
    config = config_for(**_transformers_fields(hf.config.to_dict()))
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def measure_bandwidth(seconds: float = 1.0) -> float:
    """GB/s: the best read rate of a large (1 GiB, larger than caches) matrix-vector product, fp32 or bf16."""
    best = 0.0
    for dtype in (torch.float32, torch.bfloat16):
        rows = 2**30 // (2048 * torch.tensor([], dtype=dtype).element_size())
        w, x = torch.randn(rows, 2048).to(dtype), torch.randn(1, 2048).to(dtype)
        seconds_per = _best_time(functools.partial(linear, x, w), seconds / 2)
        best = max(best, w.numel() * w.element_size() / seconds_per / 1e9)
    return best


def _best_time(fn: Callable[[], object], budget: float, at_least: int = 3) -> float:
    fn()
    times, began = [], time.perf_counter()
    while len(times) < at_least or time.perf_counter() - began < budget:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def step_bytes(model: GPT, batch: int, context: int) -> int:
    """Bytes one decode step reads: every matrix it multiplies, and the keys/values of `context` tokens."""
    weights = sum(
        b.numel() * b.element_size()
        for name, b in [*model.named_parameters(), *model.named_buffers()]
        if b.dim() == 2 and "wte" not in name and "value_embeds" not in name
    )
    cfg = model.config
    kv = 2 * cfg.n_layer * batch * cfg.n_kv_head * cfg.head_dim * context * model.dtype.itemsize
    return weights + kv


@torch.inference_mode()
def ours(model: GPT, batches: list[int], steps: int, bandwidth: float, dtype: str) -> Figures:
    figures = Figures("nanochat-py", dtype)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, PROMPT))

    def prefill():
        cache = model.new_cache(1, PROMPT + 1)
        return model(prompt, cache=cache, last_only=True).argmax(-1)

    figures.ttft_s = _best_time(prefill, 0.5, at_least=2)
    figures.prefill_tok_s = PROMPT / figures.ttft_s
    for batch in batches:
        cache = model.new_cache(batch, DECODE_PROMPT + steps + 1)
        token = model(torch.randint(0, vocab, (batch, DECODE_PROMPT)), cache=cache, last_only=True)[:, -1].argmax(-1)
        began = time.perf_counter()
        for _ in range(steps):
            token = model(token[:, None], cache=cache, last_only=True)[:, -1].argmax(-1)
        per_step = (time.perf_counter() - began) / steps
        figures.decode_tok_s[batch] = batch / per_step
        read = step_bytes(model, batch, DECODE_PROMPT + steps // 2)
        figures.bandwidth_use[batch] = read / per_step / 1e9 / bandwidth
    figures.peak_rss_mb = _peak_rss_mb()
    return figures


@torch.inference_mode()
def transformers_figures(hf, twin: GPT, batches: list[int], steps: int, bandwidth: float) -> Figures:
    """transformers' figures; `twin` is our fp32 model on the same tensors, which reads the same bytes per step."""
    figures = Figures("transformers", "fp32")
    vocab = hf.config.vocab_size
    prompt = torch.randint(0, vocab, (1, PROMPT))
    figures.ttft_s = _best_time(lambda: hf(prompt, use_cache=True).logits[:, -1].argmax(-1), 0.5, at_least=2)
    figures.prefill_tok_s = PROMPT / figures.ttft_s
    for batch in batches:
        ids = torch.randint(0, vocab, (batch, DECODE_PROMPT))
        generate = functools.partial(_hf_generate, hf, ids)
        one = _best_time(functools.partial(generate, 1), 0.0, at_least=2)  # prefill + first token
        t = time.perf_counter()
        generate(steps + 1)
        per_step = (time.perf_counter() - t - one) / steps
        figures.decode_tok_s[batch] = batch / per_step
        figures.bandwidth_use[batch] = step_bytes(twin, batch, DECODE_PROMPT + steps // 2) / per_step / 1e9 / bandwidth
    figures.peak_rss_mb = _peak_rss_mb()
    return figures


def _hf_generate(hf, ids: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones_like(ids)
    return hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=1)


@torch.inference_mode()
def quality(reference: GPT, variant: GPT, prompts: int = 4, tokens: int = 256) -> tuple[float, float]:
    """(share of positions where the variant's greedy token equals fp32's, max |logit difference|), with both
    reading fp32's own greedy continuation of a few random prompts (teacher forcing)."""
    agree = total = 0
    worst = 0.0
    gen = torch.Generator().manual_seed(1)
    for _ in range(prompts):
        ids = torch.randint(0, reference.config.vocab_size, (1, 8), generator=gen)
        cache = reference.new_cache(1, 8 + tokens)
        logits = reference(ids, cache=cache, last_only=True)[:, -1]
        seq = [ids]
        for _ in range(tokens - 1):
            token = logits.argmax(-1, keepdim=True)
            seq.append(token)
            logits = reference(token, cache=cache, last_only=True)[:, -1]
        full = torch.cat(seq, dim=1)
        want, got = reference(full)[0, 7:], variant(full)[0, 7:]
        agree += int((want.argmax(-1) == got.argmax(-1)).sum())
        total += want.shape[0]
        worst = max(worst, float((want - got).abs().max()))
    return agree / total, worst


def variant_of(model: GPT, dtype: str) -> GPT:
    """A copy of `model` in bf16 or int8 (fp32 is the model itself)."""
    if dtype == "fp32":
        return model
    copy = GPT(model.config)
    copy.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    copy.eval().requires_grad_(False)
    return copy.to(torch.bfloat16) if dtype == "bf16" else quantize_int8(copy)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(model: GPT, hf, dtypes: list[str], batches: list[int], steps: int, compare: list[str]) -> dict:
    torch.manual_seed(0)
    bandwidth = measure_bandwidth()
    results: list[Figures] = []
    if "transformers" in compare and hf is not None:
        results.append(transformers_figures(hf, model, batches, steps, bandwidth))
    for dtype in dtypes:
        variant = variant_of(model, dtype)
        figures = ours(variant, batches, steps, bandwidth, dtype)
        if dtype != "fp32":
            figures.agreement, figures.max_logit_diff = quality(model, variant)
        results.append(figures)
        del variant
        gc.collect()
    return {
        "bandwidth_gb_s": bandwidth,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "results": [asdict(r) for r in results],
    }


def table(report: dict) -> str:
    """The report as a plain-text table; (N.NNx) is the ratio to transformers fp32 where it ran."""
    rows = report["results"]
    base = next((r for r in rows if r["engine"] == "transformers"), None)

    def vs(value: float, ref: float | None) -> str:
        return f" ({value / ref:.2f}x)" if ref else ""

    batches = list(rows[0]["decode_tok_s"])
    header = ["engine", "dtype", "prefill tok/s", "TTFT s", *[f"decode b{b} tok/s (bw use)" for b in batches],
              "peak RSS MB", "agreement", "max |dlogit|"]  # fmt: skip
    lines = [header]
    for r in rows:
        prefill = f"{r['prefill_tok_s']:.0f}" + vs(r["prefill_tok_s"], base and base["prefill_tok_s"])
        cells = [r["engine"], r["dtype"], prefill, f"{r['ttft_s']:.3f}"]
        for b in batches:
            tok = r["decode_tok_s"][b]
            cells.append(f"{tok:.1f} ({r['bandwidth_use'][b]:.0%})" + vs(tok, base and base["decode_tok_s"][b]))
        cells.append(f"{r['peak_rss_mb']:.0f}")
        cells.append(f"{r['agreement']:.1%}" if r["agreement"] is not None else "-")
        cells.append(f"{r['max_logit_diff']:.3f}" if r["max_logit_diff"] is not None else "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    summary = (f"measured bandwidth {report['bandwidth_gb_s']:.1f} GB/s, {report['threads']} threads, "
               f"{report['params'] / 1e6:.0f}M parameters")  # fmt: skip
    return "\n".join([summary, *text])


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2)
