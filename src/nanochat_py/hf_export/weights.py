"""A loaded model's tensors under the names transformers' NanoChat models use.

The blocks take transformers' NanoChatForCausalLM names (the layout loading a transformers directory expects,
checkpoint.TRANSFORMERS_NAMES); the parameters later generations added keep nanochat's names under `model.`
(`model.resid_lambdas`, `model.value_embeds.3.weight`, `model.layers.3.self_attn.ve_gate.weight`, ...).
"""

from __future__ import annotations

import torch

from ..checkpoint import TRANSFORMERS_NAMES
from ..model import GPT

_BLOCK_NAMES = {ours: theirs for theirs, ours in TRANSFORMERS_NAMES.items() if not theirs.startswith("model.")}
_VOCAB_ROWS = ("transformer.wte.weight", "lm_head.weight")  # and every value_embeds.* table


def transformers_name(key: str) -> str:
    """nanochat's name of a tensor -> its name in an exported transformers directory."""
    if key == "transformer.wte.weight":
        return "model.embed_tokens.weight"
    if key == "lm_head.weight":
        return key
    if key.startswith("transformer.h."):
        key = key.replace("transformer.h.", "model.layers.", 1)
        for ours, theirs in _BLOCK_NAMES.items():
            key = key.replace(f".{ours}.", f".{theirs}.")
        return key
    return "model." + key  # resid_lambdas, x0_lambdas, value_embeds.*, smear_gate, smear_lambda, backout_lambda


def transformers_state_dict(model: GPT, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor, renamed and in `dtype`. The embedding tables and lm_head are cut to the tokenizer's
    vocabulary: the rows nanochat pads them with (to a multiple of 64) are never looked up, and their logits
    are dropped, so transformers and serving engines never see (or sample) a token the tokenizer lacks."""
    vocab = model.config.vocab_size
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if key in _VOCAB_ROWS or key.startswith("value_embeds."):
            tensor = tensor[:vocab]
        state[transformers_name(key)] = tensor.to(dtype).contiguous()
    return state
