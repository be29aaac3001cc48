"""config.json and generation_config.json of an export: transformers' own NanoChat (G0) or nanochat_gpt (any).

Written as plain JSON, so exporting needs no transformers. Both stop a reply at <|assistant_end|> or <|bos|>,
the tokens nanochat's engine stops at.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..tokenizer import Tokenizer

REMOTE_FILES = ("configuration_nanochat_gpt.py", "modeling_nanochat_gpt.py")  # shipped for nanochat_gpt models
_AUTO_MAP = {
    "AutoConfig": "configuration_nanochat_gpt.NanoChatGPTConfig",
    "AutoModel": "modeling_nanochat_gpt.NanoChatGPTModel",  # what vLLM's and SGLang's backends build
    "AutoModelForCausalLM": "modeling_nanochat_gpt.NanoChatGPTForCausalLM",
}


def runs_on_stock_transformers(config: ModelConfig) -> bool:
    """Whether transformers' NanoChatForCausalLM computes this model: G0's architecture, any shapes, RoPE base,
    softcap and norm epsilon (it normalises in float32, where nanochat's default epsilon is float32's)."""
    return (
        config.generation == "G0"
        and config.qk_scale == 1.0
        and not (config.resid_lambdas or config.value_embeds or config.smear or config.backout)
        and config.window_pattern is None
    )


def _shapes(config: ModelConfig) -> dict:
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "max_position_embeddings": config.sequence_len,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_base)},
        "final_logit_softcapping": config.softcap,
    }


def _tokens(tokenizer: Tokenizer) -> dict:
    stop = [tokenizer.special("<|assistant_end|>"), tokenizer.bos_token_id]
    # no pad id in the model config: transformers' NanoChat would freeze that embedding row in fine-tuning
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": stop, "pad_token_id": None}


def config_json(config: ModelConfig, tokenizer: Tokenizer, dtype: torch.dtype) -> dict:
    dtype_name = str(dtype).removeprefix("torch.")
    # torch_dtype: the name transformers 4 and older tools read the weights' dtype by
    common = dict(initializer_range=0.02, tie_word_embeddings=False, use_cache=True, dtype=dtype_name,
                  torch_dtype=dtype_name)  # fmt: skip
    if runs_on_stock_transformers(config):
        eps = config.norm_eps if config.norm_eps is not None else torch.finfo(torch.float32).eps
        return {
            "architectures": ["NanoChatForCausalLM"],
            "model_type": "nanochat",
            **_shapes(config),
            "hidden_act": "relu2",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "rms_norm_eps": eps,
            **_tokens(tokenizer),
            **common,
        }
    windows = config.window_sizes()
    sliding = [w is not None and w < config.sequence_len for w in windows]  # 'L' (w = T) is full attention
    return {
        "architectures": ["NanoChatGPTForCausalLM"],
        "model_type": "nanochat_gpt",
        "auto_map": _AUTO_MAP,
        **_shapes(config),
        "rms_norm_eps": config.norm_eps,
        "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
        "sliding_window": config.short_window + 1 if any(sliding) else None,
        "nanochat_generation": config.generation,
        "window_pattern": config.window_pattern,
        "qk_scale": config.qk_scale,
        "use_resid_lambdas": config.resid_lambdas,
        "use_value_embeds": config.value_embeds,
        "ve_gate_scale": config.ve_gate_scale,
        "ve_gate_channels": config.ve_gate_channels,
        "use_smear": config.smear,
        "smear_channels": config.smear_channels,
        "use_backout": config.backout,
        **_tokens(tokenizer),
        **common,
    }


def generation_config_json(tokenizer: Tokenizer) -> dict:
    tokens = _tokens(tokenizer)
    return {**tokens, "pad_token_id": tokenizer.bos_token_id}  # generate pads finished rows with <|bos|>
