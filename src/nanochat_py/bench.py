"""`nanochat-py bench`: how fast a model prefills and decodes, how close decoding comes to the memory
bandwidth, and the same figures for transformers on the very same weights, in one process run.

Random-weight models of the published shapes (`--shape d12|d20|d32`) need no download and no tokenizer.
Bandwidth utilisation is the bytes a decode step must read (every matrix it multiplies plus the keys and
values it attends to) over the step time, divided by the read rate of a large `torch.sum` measured just
before and just after that same measurement (memory bandwidth on a shared machine drifts over minutes).
Quality is teacher-forced: each variant decodes fp32's own greedy continuation of a fixed prompt set and
we count the positions where its greedy token is fp32's.
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

from .config import config_for
from .model import GPT
from .quantize import quantize

SHAPES = {"d2": 2, "d12": 12, "d20": 20, "d32": 32}  # G0 shapes (d12/d20/d32 published; d2 is a smoke test)
PROMPT = 512  # prefill length
DECODE_PROMPT = 16  # context before the timed decode steps
QUALITY_TOKENS = 256


@dataclass
class Figures:
    engine: str
    dtype: str
    prefill_tok_s: float = 0.0
    ttft_s: float = 0.0
    decode_tok_s: dict[int, float] = field(default_factory=dict)  # batch -> aggregate tokens/s
    bandwidth_use: dict[int, float] = field(default_factory=dict)  # batch -> share of the measured bandwidth
    weights_mb: float = 0.0  # the bytes of the engine's own tensors
    peak_memory_mb: float = 0.0  # process peak RSS during its run (CPU), peak allocated (CUDA)
    agreement: float | None = None  # share of teacher-forced greedy tokens equal to fp32's
    max_logit_diff: float | None = None


# --- models -------------------------------------------------------------------------------------------


def random_published(shape: str, seed: int = 0, device: torch.device | str = "cpu") -> GPT:
    """Our GPT in a published shape (G0, 64 * depth wide in 128-wide heads) with random unit-scale weights,
    made on `device` (a d32 is 7.6 GB of fp32: drawing it on a GPU takes a moment, on a CPU a minute)."""
    depth = SHAPES[shape]
    heads = max(1, depth // 2)
    config = config_for("G0", vocab_size=65536, n_layer=depth, n_embd=64 * depth, n_head=heads, n_kv_head=heads,
                        sequence_len=2048)  # fmt: skip
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device=device)
    _randomise(model)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def _randomise(model: torch.nn.Module) -> None:
    """Unit-variance activations everywhere, so logits are not all near zero (a fresh init's are)."""
    for name, p in model.named_parameters():
        if p.dim() == 2 and "embed" not in name and "wte" not in name:
            p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
        else:
            p.normal_(0.0, 1.0)


def transformers_twin(model: GPT):
    """transformers' NanoChatForCausalLM on the SAME tensors as `model` (no copy); None where transformers is
    not installed or cannot express the model (it implements G0 only)."""
    try:
        import transformers
    except ImportError:
        return None
    cfg = model.config
    if cfg.generation != "G0" or cfg.padded_vocab_size != cfg.vocab_size:
        return None
    hf_config = transformers.NanoChatConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.mlp_hidden,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
        max_position_embeddings=cfg.sequence_len, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
        final_logit_softcapping=cfg.softcap, rms_norm_eps=cfg.norm_eps or torch.finfo(torch.float32).eps,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    with torch.device("meta"):
        hf = transformers.NanoChatForCausalLM(hf_config)
    theirs = {"attn.c_q": "self_attn.q_proj", "attn.c_k": "self_attn.k_proj", "attn.c_v": "self_attn.v_proj",
              "attn.c_proj": "self_attn.o_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}  # fmt: skip
    state = {}
    for key, tensor in model.state_dict().items():
        key = key.replace("transformer.wte.", "model.embed_tokens.").replace("transformer.h.", "model.layers.")
        for ours, hf_name in theirs.items():
            key = key.replace(f".{ours}.", f".{hf_name}.")
        state[key] = tensor
    hf.load_state_dict(state, strict=True, assign=True)
    with torch.device(model.device):  # its RoPE frequencies are buffers outside the state dict: compute them
        hf.model.rotary_emb = type(hf.model.rotary_emb)(hf_config)
    return hf.eval().requires_grad_(False)


def variant_of(model: GPT, dtype: str) -> GPT:
    """A copy of `model` in bf16, int8 or int4 (fp32 is the model itself)."""
    if dtype == "fp32":
        return model
    copy = GPT(model.config).to(model.device)
    copy.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    copy.eval().requires_grad_(False)
    return copy.to(torch.bfloat16) if dtype == "bf16" else quantize(copy, dtype)


# --- measuring ----------------------------------------------------------------------------------------


class Bandwidth:
    """The rate a large `torch.sum` reads memory on the device: the yardstick of bandwidth utilisation."""

    def __init__(self, device: torch.device, gib: float = 1.0):
        self.device = device
        self.buffer = torch.ones(int(gib * 2**30) // 4, device=device)

    def read_gb_s(self) -> float:
        seconds = _best_time(lambda: self.buffer.sum(), self.device, 0.3)
        return self.buffer.numel() * 4 / seconds / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _best_time(fn: Callable[[], object], device: torch.device, budget: float, at_least: int = 3) -> float:
    fn()
    _sync(device)
    times, began = [], time.perf_counter()
    while len(times) < at_least or time.perf_counter() - began < budget:
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def _timed_with_bandwidth(fn: Callable[[], float], bandwidth: Bandwidth) -> tuple[float, float]:
    """(fn's seconds, the best bandwidth read just before or just after it)."""
    before = bandwidth.read_gb_s()
    seconds = fn()
    return seconds, max(before, bandwidth.read_gb_s())


def step_bytes(model: GPT, batch: int, context: int) -> int:
    """Bytes one decode step reads: every weight it multiplies, and the keys/values each layer attends to."""
    weights = sum(
        t.numel() * t.element_size()
        for name, t in [*model.named_parameters(), *model.named_buffers()]
        if "wte" not in name and "value_embeds" not in name  # embeddings: one row per token is read
    )
    cfg = model.config
    seen = sum(min(context, (w if w is not None else context) + 1) for w in model.window_sizes)
    kv = 2 * seen * batch * cfg.n_kv_head * cfg.head_dim * model.kv_dtype.itemsize
    return weights + kv


def tensor_mb(module: torch.nn.Module) -> float:
    tensors = {t.data_ptr(): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM) to its current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # elsewhere the peak covers the whole process so far


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def decode_seconds(model: GPT, batch: int, steps: int, prompt: int = DECODE_PROMPT) -> float:
    """Seconds per greedy decode step of `batch` rows: `steps` steps timed after a random `prompt`-token
    prefill and one warm-up step, in a fresh cache."""
    device = model.device
    cache = model.new_cache(batch, prompt + steps + 2)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), device=device)
    token = model(ids, cache=cache, last_only=True)[:, -1].argmax(-1)
    token = model(token[:, None], cache=cache, last_only=True)[:, -1].argmax(-1)  # warm-up step
    _sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        token = model(token[:, None], cache=cache, last_only=True)[:, -1].argmax(-1)
    _sync(device)
    return (time.perf_counter() - began) / steps


@torch.inference_mode()
def ours(model: GPT, batches: list[int], steps: int, bandwidth: Bandwidth, dtype: str, prompt: int = PROMPT) -> Figures:
    figures = Figures("nanochat-py", dtype, weights_mb=tensor_mb(model))
    device, vocab = model.device, model.config.vocab_size
    _reset_peak_memory(device)
    prompt_len = min(prompt, model.config.sequence_len)
    prompt = torch.randint(0, vocab, (1, prompt_len), device=device)

    def prefill():
        return model(prompt, cache=model.new_cache(1, prompt_len + 1), last_only=True).argmax(-1)

    figures.ttft_s = _best_time(prefill, device, 0.5, at_least=2)
    figures.prefill_tok_s = prompt_len / figures.ttft_s
    for batch in batches:
        per_step, gb_s = _timed_with_bandwidth(lambda batch=batch: decode_seconds(model, batch, steps), bandwidth)
        figures.decode_tok_s[batch] = batch / per_step
        figures.bandwidth_use[batch] = step_bytes(model, batch, DECODE_PROMPT + steps // 2) / per_step / 1e9 / gb_s
    figures.peak_memory_mb = _peak_memory_mb(device)
    return figures


@torch.inference_mode()
def transformers_figures(
    hf, twin: GPT, batches: list[int], steps: int, bandwidth: Bandwidth, dtype: str, prompt: int = PROMPT
) -> Figures:
    """transformers' figures; `twin` is our model on the same tensors, which reads the same bytes per step."""
    figures = Figures("transformers", dtype, weights_mb=tensor_mb(hf))
    device, vocab = twin.device, hf.config.vocab_size
    _reset_peak_memory(device)
    prompt_len = min(prompt, twin.config.sequence_len)
    prompt = torch.randint(0, vocab, (1, prompt_len), device=device)
    figures.ttft_s = _best_time(lambda: hf(prompt, use_cache=True).logits[:, -1].argmax(-1), device, 0.5, at_least=2)
    figures.prefill_tok_s = prompt_len / figures.ttft_s
    for batch in batches:
        ids = torch.randint(0, vocab, (batch, DECODE_PROMPT), device=device)
        generate = functools.partial(_hf_generate, hf, ids)
        first = _best_time(functools.partial(generate, 1), device, 0.0, at_least=2)  # prefill + first token

        def decode(generate=generate, first=first) -> float:
            began = time.perf_counter()
            generate(steps + 1)
            _sync(device)
            return (time.perf_counter() - began - first) / steps

        per_step, gb_s = _timed_with_bandwidth(decode, bandwidth)
        figures.decode_tok_s[batch] = batch / per_step
        figures.bandwidth_use[batch] = step_bytes(twin, batch, DECODE_PROMPT + steps // 2) / per_step / 1e9 / gb_s
    figures.peak_memory_mb = _peak_memory_mb(device)
    return figures


def _hf_generate(hf, ids: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones_like(ids)
    return hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=1)


# --- quality ------------------------------------------------------------------------------------------


def quality_prompts(model: GPT, tokenizer=None, count: int = 4) -> list[list[int]]:
    """The fixed prompt set: chat questions where there is a tokenizer, else seeded random tokens."""
    if tokenizer is not None:
        questions = ["What is the capital of France?", "Write a short poem about the sea.",
                     "Explain why the sky is blue.", "What is 12 times 7?"]  # fmt: skip
        return [tokenizer.render_for_completion([{"role": "user", "content": q}]) for q in questions[:count]]
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, model.config.vocab_size, (8,), generator=gen).tolist() for _ in range(count)]


@torch.inference_mode()
def decode_logits(model: GPT, prompts: list[list[int]], forced: torch.Tensor | None, tokens: int):
    """Greedy-decode every prompt together (per-row cache) for `tokens` steps, or follow `forced` tokens.

    Returns (the tokens fed after each prompt [B, tokens], float logits of every step [B, tokens, vocab])."""
    device = model.device
    capacity = max(len(p) for p in prompts) + tokens
    cache = model.new_cache(len(prompts), capacity, per_row=True)
    last = []
    for row, prompt in enumerate(prompts):
        one = model.new_cache(1, capacity)
        last.append(model(torch.tensor([prompt], device=device), cache=one, last_only=True)[0, -1])
        cache.load_row(row, one)
    logits = [torch.stack(last).float()]
    fed = []
    for t in range(tokens - 1):
        token = forced[:, t] if forced is not None else logits[-1].argmax(-1)
        fed.append(token)
        logits.append(model(token[:, None], cache=cache, last_only=True)[:, -1].float())
    return torch.stack(fed, dim=1) if fed else None, torch.stack(logits, dim=1)


def agreement(want: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(share of positions with the same greedy token, max |logit difference|)."""
    same = (want.argmax(-1) == got.argmax(-1)).float().mean().item()
    return same, (want - got).abs().max().item()


# --- the run ------------------------------------------------------------------------------------------


def run(
    model: GPT,
    dtypes: list[str],
    batches: list[int],
    steps: int,
    compare: list[str],
    tokenizer=None,
    prompt: int = PROMPT,
) -> dict:
    """Every figure for `model` (fp32, on its device) in each dtype, and for transformers where asked and able:
    on the same tensors, in fp32 on a CPU (bf16 there is not what transformers users run), in each of fp32
    and bf16 elsewhere. Each transformers run comes just before ours in the same dtype."""
    torch.manual_seed(0)
    device = model.device
    bandwidth = Bandwidth(device)
    results: list[Figures] = []
    notes: list[str] = []
    prompts = quality_prompts(model, tokenizer)
    tokens = min(QUALITY_TOKENS, model.config.sequence_len - max(len(p) for p in prompts))
    fed, reference_logits = decode_logits(model, prompts, None, tokens)
    hf_dtypes = {"fp32"} if device.type == "cpu" else {"fp32", "bf16"}
    if "transformers" in compare and transformers_twin(model) is None:
        generation = model.config.generation
        notes.append(f"transformers: not run (not installed, or a {generation} model: it implements G0)")
        compare = []
    for dtype in dtypes:
        variant = variant_of(model, dtype)
        if "transformers" in compare and dtype in hf_dtypes:
            hf = transformers_twin(variant)
            figures = transformers_figures(hf, variant, batches, steps, bandwidth, dtype, prompt)
            figures.agreement, figures.max_logit_diff = _transformers_agreement(hf, prompts, fed, reference_logits)
            results.append(figures)
            del hf
        figures = ours(variant, batches, steps, bandwidth, dtype, prompt)
        if dtype != "fp32":
            _, logits = decode_logits(variant, prompts, fed, tokens)
            figures.agreement, figures.max_logit_diff = agreement(reference_logits, logits)
        results.append(figures)
        del variant
        gc.collect()
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "bandwidth_gb_s": bandwidth.read_gb_s(),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "generation": model.config.generation,
        "prompt_tokens": prompt,
        "results": [asdict(r) for r in results],
        "notes": notes,
    }


@torch.inference_mode()
def _transformers_agreement(hf, prompts, fed, reference_logits) -> tuple[float, float]:
    """transformers against our fp32 decode, on the same tokens: the two engines compute the same model."""
    rows = []
    for row, prompt in enumerate(prompts):
        ids = torch.tensor([prompt + fed[row].tolist()], device=reference_logits.device)
        rows.append(hf(ids).logits[0, len(prompt) - 1 :].float())
    return agreement(reference_logits, torch.stack(rows))


def table(report: dict) -> str:
    """The report as a plain-text table; (N.NNx) is the ratio to transformers in the same dtype where it ran,
    else to transformers fp32."""
    rows = report["results"]
    bases = {r["dtype"]: r for r in rows if r["engine"] == "transformers"}

    def vs(value: float, ref: float | None) -> str:
        return f" ({value / ref:.2f}x)" if ref else ""

    batches = list(rows[0]["decode_tok_s"])
    header = ["engine", "dtype", "prefill tok/s", "TTFT s", *[f"decode b{b} tok/s (bw use)" for b in batches],
              "weights MB", "peak MB", "agreement", "max |dlogit|"]  # fmt: skip
    lines = [header]
    for r in rows:
        base = bases.get(r["dtype"], bases.get("fp32")) if r["engine"] != "transformers" else None
        prefill = f"{r['prefill_tok_s']:.0f}" + vs(r["prefill_tok_s"], base and base["prefill_tok_s"])
        cells = [r["engine"], r["dtype"], prefill, f"{r['ttft_s']:.3f}"]
        for b in batches:
            tok = r["decode_tok_s"][b]
            cells.append(f"{tok:.1f} ({r['bandwidth_use'][b]:.0%})" + vs(tok, base and base["decode_tok_s"][b]))
        cells += [f"{r['weights_mb']:.0f}", f"{r['peak_memory_mb']:.0f}"]
        cells.append(f"{r['agreement']:.1%}" if r["agreement"] is not None else "-")
        cells.append(f"{r['max_logit_diff']:.3f}" if r["max_logit_diff"] is not None else "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    device = report["device"] + (f" ({report['device_name']})" if report.get("device_name") else "")
    summary = (f"{report['generation']}, {report['params'] / 1e6:.0f}M parameters on {device}, "
               f"{report['threads']} threads; bandwidth ~{report['bandwidth_gb_s']:.1f} GB/s at the end")  # fmt: skip
    return "\n".join([summary, *text, *report["notes"]])


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2)
