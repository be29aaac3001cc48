"""nanochat's GPT, every architecture generation (G0-G5), for Hugging Face transformers.

Shipped beside the weights of a `nanochat-py export --format transformers` directory and loaded with
`trust_remote_code=True`; it depends on torch and transformers only. The attention goes through transformers'
attention interface (`ALL_ATTENTION_FUNCTIONS`, picked by `attn_implementation`), so eager, sdpa, flash and flex
attention work, and so do engines that plug their own kernels in through it (vLLM's and SGLang's transformers
backends); sliding windows reach those as the interface's `sliding_window` argument, and eager/sdpa as masks.

What nanochat computes, and what each generation added (the switches are NanoChatGPTConfig's):
    x = norm(embed(ids))                 norm: RMSNorm without a weight, eps = the dtype's machine epsilon
    G5 smear:  x_t += smear_lambda * sigmoid(x_t[:24] @ smear_gate) * x_{t-1}      (x_{t-1} before smearing)
    x0 = x
    for each layer i:
        G1+:   x = resid_lambdas[i] * x + x0_lambdas[i] * x0
        x = x + attention(norm(x));  x = x + fc2(relu(fc1(norm(x)))^2)
        attention: RoPE, then a norm of q and k, then q, k *= qk_scale (G4+); 'S' layers see a short window
        G2+ value embeddings (alternate layers): v += gate_scale * sigmoid(n[:c] @ ve_gate) * value_embed(ids)
    G5 backout: x -= backout_lambda * (x after layer n_layer // 2)
    logits = softcap * tanh(lm_head(norm(x)) / softcap)

Limits: an 'L' layer attends to everything (nanochat slides it past max_position_embeddings + 1 tokens, which
no model was trained on). G5's smear needs each token's predecessor, which a forward gets from its own input
or from this model's KV cache; engines that feed tokens without that cache (vLLM, SGLang) are refused for G5.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_nanochat_gpt import NanoChatGPTConfig

# attention backends that run a flat batch of many sequences' tokens without this model's cache: G5's smear
# cannot find a token's predecessor there (a decode step holds only the new token)
_FLAT_BATCH_BACKENDS = ("vllm", "sglang", "paged")


class NanoChatGPTRMSNorm(nn.Module):
    """RMSNorm without a weight. eps None is the input dtype's machine epsilon (what torch and nanochat use)."""

    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class NanoChatGPTRotaryEmbedding(nn.Module):
    """cos/sin of nanochat's rotary angles, position * base^(-2i/d), in float32 like nanochat's tables."""

    def __init__(self, config: NanoChatGPTConfig):
        super().__init__()
        self.base = float(config.rope_parameters["rope_theta"])
        self.head_dim = config.hidden_size // config.num_attention_heads

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # computed per call rather than kept as a buffer: a few hundred numbers, and nothing to initialise or move
        channels = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=x.device)
        inv_freq = 1.0 / (self.base ** (channels / self.head_dim))
        angles = position_ids[..., None].float() * inv_freq  # [batch, seq, head_dim / 2]
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head (x: [batch, seq, heads, head_dim]) the way nanochat does."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention over [batch, heads, seq, head_dim]; the mask is additive (0 or the dtype's min)."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)  # grouped-query attention: each kv head serves `groups` q heads
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class NanoChatGPTAttention(nn.Module):
    def __init__(self, config: NanoChatGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # engines' attention backends find this layer's KV cache by it
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        heads, kv_heads, width = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
        self.num_key_value_groups = heads // kv_heads  # transformers' sdpa repeats each kv head this often
        self.q_proj = nn.Linear(width, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(width, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(width, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, width, bias=False)
        self.q_norm = NanoChatGPTRMSNorm(config.rms_norm_eps)
        self.k_norm = NanoChatGPTRMSNorm(config.rms_norm_eps)
        sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = config.sliding_window if sliding else None
        value_embed = config.has_value_embed(layer_idx)
        self.ve_gate = nn.Linear(config.ve_gate_channels, kv_heads, bias=False) if value_embed else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        value_embed: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq, _ = hidden_states.shape
        shape = (batch, seq, -1, self.head_dim)  # -1: the heads this rank holds under tensor parallelism
        q = self.q_proj(hidden_states).view(shape)
        k = self.k_proj(hidden_states).view(shape)
        v = self.v_proj(hidden_states).view(shape)
        if self.ve_gate is not None:
            # value residual: a per-kv-head gate read from the first channels of the attention input
            channels = hidden_states[..., : self.config.ve_gate_channels]
            gate = self.config.ve_gate_scale * torch.sigmoid(self.ve_gate(channels))
            v = v + gate.unsqueeze(-1) * value_embed.view(shape)
        cos, sin = position_embeddings
        q, k = self.q_norm(apply_rotary(q, cos, sin)), self.k_norm(apply_rotary(k, cos, sin))  # RoPE, then norm
        if self.config.qk_scale != 1.0:
            q, k = q * self.config.qk_scale, k * self.config.qk_scale
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [batch, heads, seq, head_dim]
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        attention: Callable = eager_attention_forward
        if self.config._attn_implementation != "eager":
            attention = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        out, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=0.0,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )
        return self.o_proj(out.reshape(batch, seq, -1)), weights


class NanoChatGPTMLP(nn.Module):
    def __init__(self, config: NanoChatGPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)).square())


class NanoChatGPTDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: NanoChatGPTConfig, layer_idx: int):
        super().__init__()
        self.self_attn = NanoChatGPTAttention(config, layer_idx)
        self.mlp = NanoChatGPTMLP(config)
        self.input_layernorm = NanoChatGPTRMSNorm(config.rms_norm_eps)
        self.post_attention_layernorm = NanoChatGPTRMSNorm(config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        value_embed: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attended, _ = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, attention_mask, value_embed, cache, **kwargs
        )
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class NanoChatGPTPreTrainedModel(PreTrainedModel):
    config_class = NanoChatGPTConfig
    config: NanoChatGPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NanoChatGPTDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True  # what vLLM and SGLang check before running a model through this interface

    def _init_weights(self, module: nn.Module) -> None:
        """For models made from a config (training from scratch); loading a checkpoint overwrites all of it."""
        super()._init_weights(module)
        if isinstance(module, NanoChatGPTModel):
            with torch.no_grad():
                for name, value in (("resid_lambdas", 1.0), ("x0_lambdas", 0.0), ("smear_lambda", 0.0),
                                    ("backout_lambda", 0.0)):  # fmt: skip
                    parameter = getattr(module, name)
                    if parameter is not None and not getattr(parameter, "_is_hf_initialized", False):
                        parameter.fill_(value)


class NanoChatGPTModel(NanoChatGPTPreTrainedModel):
    def __init__(self, config: NanoChatGPTConfig):
        super().__init__(config)
        width, layers = config.hidden_size, config.num_hidden_layers
        self.embed_tokens = nn.Embedding(config.vocab_size, width)
        self.layers = nn.ModuleList(NanoChatGPTDecoderLayer(config, i) for i in range(layers))
        self.norm = NanoChatGPTRMSNorm(config.rms_norm_eps)  # both the embedding's norm and the final one
        self.rotary_emb = NanoChatGPTRotaryEmbedding(config)
        self.resid_lambdas = nn.Parameter(torch.ones(layers)) if config.use_resid_lambdas else None
        self.x0_lambdas = nn.Parameter(torch.zeros(layers)) if config.use_resid_lambdas else None
        kv_width = config.num_key_value_heads * (width // config.num_attention_heads)
        value_layers = [i for i in range(layers) if config.has_value_embed(i)]
        self.value_embeds = (
            nn.ModuleDict({str(i): nn.Embedding(config.vocab_size, kv_width) for i in value_layers})
            if value_layers
            else None
        )
        self.smear_gate = nn.Linear(config.smear_channels, 1, bias=False) if config.use_smear else None
        self.smear_lambda = nn.Parameter(torch.zeros(1)) if config.use_smear else None
        self.backout_lambda = nn.Parameter(torch.zeros(1)) if config.use_backout else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        cache = kwargs.pop("past_key_values", cache)  # the name transformers used before `cache`
        for name in ("return_dict", "output_attentions", "output_hidden_states"):
            kwargs.pop(name, None)  # not supported; must not reach the attention functions
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is None and self.value_embeds is not None:
            raise ValueError("this model's value embeddings are looked up by token id: pass input_ids")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        use_cache = config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=config)
        if position_ids is None:
            position_ids = _positions(attention_mask, cache, inputs_embeds)

        masks = attention_mask
        if not isinstance(masks, dict):  # generate may have made them already
            mask_args = dict(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache,
                             position_ids=position_ids)  # fmt: skip
            masks = {"full_attention": create_causal_mask(**mask_args)}
            if "sliding_attention" in config.layer_types:
                masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_args)

        x = self.norm(inputs_embeds)
        if self.smear_gate is not None:
            x = self._smear(x, position_ids, cache)
        x0 = x
        position_embeddings = self.rotary_emb(x, position_ids)
        backout_at = config.num_hidden_layers // 2 if self.backout_lambda is not None else -1
        for i, layer in enumerate(self.layers):
            if self.resid_lambdas is not None:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            value_embed = self.value_embeds[str(i)](input_ids) if config.has_value_embed(i) else None
            x = layer(
                x,
                attention_mask=masks[config.layer_types[i]],
                position_embeddings=position_embeddings,
                value_embed=value_embed,
                cache=cache,
                position_ids=position_ids,
                **kwargs,
            )
            if i == backout_at:
                x_mid = x
        if self.backout_lambda is not None:
            x = x - self.backout_lambda.to(x.dtype) * x_mid  # remove a share of the mid-layer residual
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), cache=cache if use_cache else None)

    def _smear(self, x: torch.Tensor, position_ids: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        """G5: mix each token's predecessor's (un-smeared) embedding into it. The predecessor is the previous
        input in this call, or for the first one the last embedding kept in the cache (in an extra cache layer
        after the attention layers, so beam search, cropping and batch selection keep it right). A token at
        position 0 (the first of its sequence, or left padding) has none."""
        if any(name in (self.config._attn_implementation or "") for name in _FLAT_BATCH_BACKENDS):
            raise NotImplementedError(
                f"G5 nanochat models cannot run under the {self.config._attn_implementation!r} attention backend: "
                "their smear needs each token's predecessor, which only this model's own cache keeps"
            )
        history = self._smear_history(cache)
        previous = history.keys[:, 0, -1:] if history is not None and history.get_seq_length() > 0 else None
        _check_predecessors(position_ids, has_history=previous is not None)
        if previous is None:
            previous = torch.zeros_like(x[:, :1])
        shifted = torch.cat([previous, x[:, :-1]], dim=1)
        has_previous = (position_ids > 0).unsqueeze(-1).to(x.dtype)
        gate = self.smear_lambda.to(x.dtype) * torch.sigmoid(self.smear_gate(x[..., : self.config.smear_channels]))
        if history is not None:
            history.update(x.unsqueeze(1), x.new_empty(*x.shape[:2], 0).unsqueeze(1))
        return x + gate * (shifted * has_previous)

    def _smear_history(self, cache: Cache | None) -> DynamicLayer | None:
        if cache is None:
            return None
        index = self.config.num_hidden_layers
        while len(cache.layers) <= index:  # a cache made from the config holds the attention layers only
            cache.layers.append(DynamicLayer())
        return cache.layers[index]


def _positions(attention_mask: torch.Tensor | None, cache: Cache | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """Each token's position in its own sequence. With a 2D padding mask (left padding), the first real token is
    position 0, as `generate` numbers them, so a padded row computes what the same row computes unpadded."""
    seq = inputs_embeds.shape[1]
    if attention_mask is not None and attention_mask.dim() == 2:
        positions = attention_mask.long().cumsum(-1) - 1
        return positions.masked_fill(attention_mask == 0, 0)[:, -seq:].to(inputs_embeds.device)
    past = cache.get_seq_length() if cache is not None else 0
    return (torch.arange(seq, device=inputs_embeds.device) + past).unsqueeze(0)


def _check_predecessors(position_ids: torch.Tensor, has_history: bool) -> None:
    """A token past its sequence's start must have its predecessor just before it, or (first one) in the cache."""
    later = position_ids > 0
    broken = later[:, 1:] & (position_ids[:, :-1] != position_ids[:, 1:] - 1)
    if bool(broken.any()) or (not has_history and bool(later[:, 0].any())):
        raise ValueError(
            "G5's smear mixes each token with the one before it, which this call does not have: continue a "
            "sequence with the cache that holds its start (use_cache=True), or pass the whole sequence"
        )


class NanoChatGPTForCausalLM(NanoChatGPTPreTrainedModel, GenerationMixin):
    def __init__(self, config: NanoChatGPTConfig):
        super().__init__(config)
        self.model = NanoChatGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=kwargs.pop("past_key_values", cache),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :]).float()  # soft-capped in float32, as nanochat does
        softcap = self.config.final_logit_softcapping
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)


__all__ = ["NanoChatGPTForCausalLM", "NanoChatGPTModel", "NanoChatGPTPreTrainedModel"]
