"""One GPT module that runs every nanochat generation, driven by ModelConfig.

Parameter names match nanochat's own state dicts (`transformer.h.0.attn.c_q.weight`, ...), so a native
checkpoint loads with a strict `load_state_dict` and saves back in the same layout. A parameter exists
only when its generation has it, so a missing or extra tensor is always an error, never silently zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from . import cuda_graphs, kernels
from .config import ModelConfig
from .kv_cache import KVCache
from .linear import KERNEL_ROWS, Linear

ROPE_EAGER_POSITIONS = 8192  # RoPE tables cover the whole context up to this length, then grow as used


def rms_norm(x: torch.Tensor, eps: float | None) -> torch.Tensor:
    """RMSNorm without a weight; eps=None uses the dtype's machine epsilon, exactly as nanochat does."""
    if x.device.type == "cpu" and not x.requires_grad and x.numel() <= KERNEL_ROWS * x.shape[-1]:
        ops = kernels.ops()
        if ops is not None and x.dtype in (torch.float32, torch.bfloat16):
            return ops.rms_norm(x, eps if eps is not None else torch.finfo(x.dtype).eps)
    return F.rms_norm(x, (x.size(-1),), eps=eps)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """nanochat's RoPE: rotate the two halves of each head by -theta (x: [B, T, heads, d])."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def _visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """nanochat's attention rule: key j is visible to query t iff t - window <= j <= t (no window: j <= t)."""
    mask = k_pos <= q_pos
    if window is not None:
        mask &= k_pos >= q_pos - window
    return mask


@dataclass
class KernelStep:
    """A decode step (one token per row) through the compiled CPU kernels: where each row's token goes,
    and the full RoPE tables, which the attention kernel indexes by position."""

    kernels: SimpleNamespace
    positions: torch.Tensor  # [B] int64
    cos: torch.Tensor  # [positions, head_dim / 2] fp32
    sin: torch.Tensor


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.config = config
        self.layer = layer
        self.window = config.window_sizes()[layer]
        c, d = config.n_embd, config.head_dim
        self.c_q = Linear(c, config.n_head * d, bias=False)
        self.c_k = Linear(c, config.n_kv_head * d, bias=False)
        self.c_v = Linear(c, config.n_kv_head * d, bias=False)
        self.c_proj = Linear(c, c, bias=False)
        if config.has_value_embed(layer):
            self.ve_gate = Linear(config.ve_gate_channels, config.n_kv_head, bias=False)

    def forward(self, x, value_embed, rope, attend, cache: KVCache | None) -> torch.Tensor:
        cfg = self.config
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, cfg.n_head, cfg.head_dim)
        k = self.c_k(x).view(B, T, cfg.n_kv_head, cfg.head_dim)
        v = self.c_v(x).view(B, T, cfg.n_kv_head, cfg.head_dim)
        if value_embed is not None:
            # value residual: a per-kv-head gate, computed from the first channels of the attention input
            gate = cfg.ve_gate_scale * torch.sigmoid(self.ve_gate(x[..., : cfg.ve_gate_channels]))
            v = v + gate.unsqueeze(-1) * value_embed.view(B, T, cfg.n_kv_head, cfg.head_dim)
        # queries and keys take the same rotation, norm and scale: one pass over both, since a GPU decode step
        # is bound by its number of kernels, not by their work
        qk = rms_norm(apply_rotary(torch.cat([q, k], dim=2), *rope), cfg.norm_eps)
        if cfg.qk_scale != 1.0:  # sharper attention (G4, G5)
            qk = qk * cfg.qk_scale
        q, k = qk.split([cfg.n_head, cfg.n_kv_head], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, d]
        if cache is not None:
            k, v = cache.write(self.layer, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)  # a bf16 cache under fp32 activations (quantised models)
        first_key, mask, is_causal = attend
        y = F.scaled_dot_product_attention(
            q,
            k[:, :, first_key:],
            v[:, :, first_key:],
            attn_mask=mask,
            is_causal=is_causal,
            enable_gqa=cfg.n_kv_head != cfg.n_head,
        )
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.c_proj = Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.eps = config.norm_eps
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = MLP(config)
        self._kernel_args: tuple = ((), ())  # see kernel_weights

    def forward(self, x, value_embed, rope, attend, cache) -> torch.Tensor:
        x = x + self.attn(rms_norm(x, self.eps), value_embed, rope, attend, cache)
        return x + self.mlp(rms_norm(x, self.eps))

    def kernel_weights(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """decode_block's six matrices and their scales (quantised layers', linear.py), remade only when a
        layer or one of its tensors was replaced (quantize, .to(), a state dict loaded with assign=True).
        Gathering them through nn.Module's attribute lookups took ~50 us a layer on a slow core, a tenth of a
        d12 int4 decode step; these plain dict lookups take a few."""
        attn, mlp = self._modules["attn"]._modules, self._modules["mlp"]._modules
        layers = (attn["c_q"], attn["c_k"], attn["c_v"], attn["c_proj"], mlp["c_fc"], mlp["c_proj"])
        tensors = [_own_tensor(layer, name) for layer in layers for name in ("weight", "scale")]
        known, args = self._kernel_args
        if len(known) != len(tensors) or any(a is not b for a, b in zip(known, tensors, strict=True)):
            args = [layer.weight for layer in layers], [layer.kernel_scale() for layer in layers]
            self._kernel_args = (tensors, args)
        return args

    def kernel_step(self, x, value_embed, cache: KVCache, step: KernelStep) -> torch.Tensor:
        """The same block for one token per row, as one compiled call (kernels/decode.cpp, decode_block).
        GPT.run calls it directly: nn.Module's __call__ around it cost ~20 us a layer on a slow core."""
        attn, cfg, B = self.attn, self.attn.config, x.shape[0]
        weights, scales = self.kernel_weights()
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        out = step.kernels.decode_block(
            x.view(B, -1), weights, scales,
            cache.k[attn.layer], cache.v[attn.layer], step.positions, -1 if attn.window is None else attn.window,
            step.cos, step.sin, eps, cfg.qk_scale, None if value_embed is None else value_embed.view(B, -1),
            attn.ve_gate.weight if value_embed is not None else None, cfg.ve_gate_scale,
        )  # fmt: skip
        return out.view(B, 1, -1)


def _own_tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    """A module's parameter or buffer `name` (None if it has neither), read from its dicts directly."""
    parameter = module._parameters.get(name)
    return parameter if parameter is not None else module._buffers.get(name)


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        if not self.weight.is_meta:  # see Linear.reset_parameters
            super().reset_parameters()


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self._kv_dtype: torch.dtype | None = None  # see kv_dtype
        vp, c, n_layer = config.padded_vocab_size, config.n_embd, config.n_layer
        self.transformer = nn.ModuleDict(
            {"wte": Embedding(vp, c), "h": nn.ModuleList(Block(config, i) for i in range(n_layer))}
        )
        self.lm_head = Linear(c, vp, bias=False)
        if config.resid_lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(n_layer))
            self.x0_lambdas = nn.Parameter(torch.zeros(n_layer))
        if config.value_embeds:
            kv_dim = config.n_kv_head * config.head_dim
            layers = [i for i in range(n_layer) if config.has_value_embed(i)]
            self.value_embeds = nn.ModuleDict({str(i): Embedding(vp, kv_dim) for i in layers})
        if config.smear:
            self.smear_gate = Linear(config.smear_channels, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        if config.backout:
            self.backout_lambda = nn.Parameter(torch.zeros(1))
        self.window_sizes = config.window_sizes()
        self._rope_table: tuple[torch.Tensor, torch.Tensor] | None = None
        self._graphs: cuda_graphs.GraphedDecode | None = None  # captured decode steps (CUDA only)

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (the embedding's: an int8-quantised model computes in it too)."""
        return self.transformer.wte.weight.dtype

    @property
    def kv_dtype(self) -> torch.dtype:
        """The KV cache's dtype: the activations', unless set otherwise (quantize.py: bf16 under the fp32
        activations of int8/int4 models)."""
        return self._kv_dtype or self.dtype

    @kv_dtype.setter
    def kv_dtype(self, dtype: torch.dtype) -> None:
        self._kv_dtype = dtype

    def new_cache(self, batch_size: int, capacity: int, per_row: bool = False) -> KVCache:
        cfg = self.config
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, cfg.head_dim, capacity)
        return KVCache(*shape, device=self.device, dtype=self.kv_dtype, per_row=per_row)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """idx [B, T] -> float32 logits [B, T, vocab_size] (or [B, 1, vocab] with last_only).

        With a cache, idx continues the sequence already in it and the cache advances by T. A per-row cache
        takes one token per row (T = 1), each row at its own position. On CUDA a decode step (T = 1, under
        inference_mode) is a replayed CUDA graph (cuda_graphs.py), which computes the same thing.
        """
        positions = None  # per-row mode: each row's position this step
        if cache is not None and cache.row_pos is not None:
            if idx.shape[1] != 1:
                raise ValueError("a per-row KV cache decodes one token per row at a time")
            positions = cache.begin_row_step()
        if cache is not None and cuda_graphs.applies(self, idx, cache):
            if self._graphs is None:
                self._graphs = cuda_graphs.GraphedDecode(self)
            logits = self._graphs.step(idx, cache)
        else:
            logits = self.run(idx, cache, positions, last_only)
        if cache is not None:
            cache.advance(idx.shape[1])
        return logits

    def run(self, idx: torch.Tensor, cache: KVCache | None, positions: torch.Tensor | None, last_only: bool):
        """The forward pass itself; the cache is written but not advanced (per-row: at `positions`)."""
        cfg = self.config
        B, T = idx.shape
        x = rms_norm(self.transformer.wte(idx).to(self.dtype), cfg.norm_eps)
        if cfg.smear:
            x = self._smear(x, cache)
        x0 = x
        step = self._kernel_step(x, cache, positions) if cache is not None and T == 1 else None
        rope, attends = None, {}  # a kernel step takes positions and the whole RoPE table instead
        if step is None and positions is not None:
            rope = self._rope_at(positions, cache.row_end, x.dtype)
            attends = {w: self._attend_rows(positions, cache.row_end, w) for w in set(self.window_sizes)}
        elif step is None:
            start = cache.pos if cache is not None else 0
            rope = self._rope(start, T, x.dtype)
            attends = {w: self._attend(start, T, w) for w in set(self.window_sizes)}
        backout_at = cfg.n_layer // 2 if cfg.backout else -1
        for i, block in enumerate(self.transformer.h):
            if cfg.resid_lambdas:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            value_embed = self.value_embeds[str(i)](idx).to(x.dtype) if cfg.has_value_embed(i) else None
            if step is not None:
                x = block.kernel_step(x, value_embed, cache, step)
            else:
                x = block(x, value_embed, rope, attends.get(self.window_sizes[i]), cache)
            if i == backout_at:
                x_mid = x
        if cfg.backout:
            x = x - self.backout_lambda.to(x.dtype) * x_mid  # remove the mid-layer residual before the head
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(rms_norm(x, cfg.norm_eps))[..., : cfg.vocab_size].float()
        if cfg.softcap and step is not None:
            # the same function, c*tanh(x/c) = 2c*sigmoid(2x/c) - c: torch's CPU tanh costs 4x a sigmoid, and a
            # decode step pays it on every logit of every row (~1e-6 apart from the tanh form). In place: a new
            # 4 MB tensor for 16 rows costs more than the sigmoid itself (d12 head of 16 rows: +0.7 ms, not +2.2)
            logits = logits.mul_(2 / cfg.softcap).sigmoid_().mul_(2 * cfg.softcap).sub_(cfg.softcap)
        elif cfg.softcap:
            logits = cfg.softcap * torch.tanh(logits / cfg.softcap)
        return logits

    def _kernel_step(self, x: torch.Tensor, cache: KVCache, positions: torch.Tensor | None) -> KernelStep | None:
        """A KernelStep where the compiled CPU kernels can run this one-token step, else None (plain torch)."""
        if x.device.type != "cpu" or (torch.is_grad_enabled() and self.transformer.wte.weight.requires_grad):
            return None
        cfg, ops = self.config, kernels.ops()
        if (
            ops is None
            or x.dtype not in (torch.float32, torch.bfloat16)
            or cache.k.dtype not in (x.dtype, torch.bfloat16)
            or cfg.n_embd % 32  # the kernels' products take widths in multiples of 32
            or cfg.mlp_hidden % 32
            # bigger fp32 batches are compute-bound and oneDNN's fp32 matmul beats the kernel's passes of 8
            # rows (linear.py); in bf16 the kernel's passes stay ahead (benchmarks/README.md), and int8/int4
            # matrices (fp32 activations) take the kernel for their products anyway
            or (x.shape[0] > KERNEL_ROWS and self.transformer.h[0].mlp.c_fc.weight.dtype == torch.float32)
        ):
            return None
        if positions is None:  # every row at the shared position
            if cache.pos >= cache.capacity:
                raise ValueError(f"KV cache is full: {cache.pos + 1} positions needed, capacity {cache.capacity}")
            positions = torch.full((x.shape[0],), cache.pos, dtype=torch.long)
        self._rope_table_for(cache.capacity)
        return KernelStep(ops, positions, *self._rope_table)

    def _smear(self, x: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """G5: mix each token's (un-smeared) predecessor embedding into it, gated by the token itself."""
        cfg = self.config
        prev = cache.prev_embedding if cache is not None else None
        if prev is None:
            prev = torch.zeros_like(x[:, :1])  # the first token of a sequence has nothing to mix in
        shifted = torch.cat([prev, x[:, :-1]], dim=1)
        if cache is not None:
            cache.set_prev_embedding(x[:, -1:])
        gate = self.smear_lambda.to(x.dtype) * torch.sigmoid(self.smear_gate(x[..., : cfg.smear_channels]))
        return x + gate * shifted

    def _attend(self, start: int, T: int, window: int | None):
        """(first cached key to read, boolean mask or None, is_causal) for queries start..start+T-1."""
        first_key = 0 if window is None else max(0, start - window)
        if T == 1:
            return first_key, None, False  # one query sees every key from first_key on
        if start == 0 and (window is None or window >= T - 1):
            return 0, None, True
        q_pos = torch.arange(start, start + T, device=self.device)[:, None]
        k_pos = torch.arange(first_key, start + T, device=self.device)[None, :]
        return first_key, _visible(q_pos, k_pos, window), False

    def _attend_rows(self, positions: torch.Tensor, end: int, window: int | None):
        """Per-row decode: each row's one query sees its own keys (a [B, 1, 1, end] mask)."""
        mask = _visible(positions[:, None], torch.arange(end, device=self.device)[None, :], window)
        return 0, mask[:, None, None, :], False

    def _rope_at(self, positions: torch.Tensor, end: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for one position per row (all below `end`), shaped [B, 1, 1, head_dim/2]."""
        self._rope_table_for(end)
        return tuple(t[positions].to(dtype)[:, None, None, :] for t in self._rope_table)

    def _rope(self, start: int, T: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions start..start+T-1, shaped [1, T, 1, head_dim/2]."""
        self._rope_table_for(start + T)
        cos, sin = (t[start : start + T].to(dtype)[None, :, None, :] for t in self._rope_table)
        return cos, sin

    def _rope_table_for(self, needed: int) -> None:
        """Make sure the cos/sin table covers `needed` positions on the model's device (it grows on demand)."""
        table = self._rope_table
        if (
            table is None
            or table[0].shape[0] < needed
            or table[0].device != self.device
            # a table made under inference_mode (by the engine) cannot be saved for backward (training)
            or (table[0].is_inference() and not torch.is_inference_mode_enabled())
        ):
            # the whole context at once when it is small (every table the same, as before); a huge context
            # (a crafted meta's sequence_len 1e8) grows by doubling to what is used, never to what is claimed
            current = 0 if table is None else table[0].shape[0]
            length = max(needed, min(self.config.sequence_len, max(2 * current, ROPE_EAGER_POSITIONS)))
            d = self.config.head_dim
            # same float32 arithmetic as the reference so the angles match bit for bit
            channels = torch.arange(0, d, 2, dtype=torch.float32, device=self.device)
            inv_freq = 1.0 / (self.config.rope_base ** (channels / d))
            angles = torch.outer(torch.arange(length, dtype=torch.float32, device=self.device), inv_freq)
            self._rope_table = (angles.cos(), angles.sin())
