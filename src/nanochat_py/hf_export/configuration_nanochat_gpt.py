"""The configuration of nanochat's GPT, every architecture generation (G0-G5), for Hugging Face transformers.

Shipped beside the weights of a `nanochat-py export --format transformers` directory (loaded with
`trust_remote_code=True`); it depends on transformers only. G0 checkpoints need none of this: transformers'
own `NanoChatForCausalLM` runs them. Each generation switch below is one change nanochat made to its model.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class NanoChatGPTConfig(PreTrainedConfig):
    model_type = "nanochat_gpt"
    # tensor parallelism splits the attention heads; a value embedding adds a whole [kv heads * head_dim] row to
    # the values, which no plan here can split with them, so models with value embeddings (G2+) get no plan
    _head_parallel_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.fc1": "colwise",
        "layers.*.mlp.fc2": "rowwise",
    }

    # shapes (transformers' names; nanochat's in the comments)
    vocab_size: int = 65536  # vocab_size: the tokenizer's tokens (the embedding tables are cut to it)
    hidden_size: int = 1280  # n_embd
    intermediate_size: int = 5120  # 4 * n_embd
    num_hidden_layers: int = 20  # n_layer
    num_attention_heads: int = 10  # n_head
    num_key_value_heads: int | None = None  # n_kv_head (None = n_head)
    max_position_embeddings: int = 2048  # sequence_len, the context the model was trained on
    rope_parameters: dict | None = None  # {"rope_type": "default", "rope_theta": 10000.0} (100000 from G4 on)
    rms_norm_eps: float | None = None  # None: the activations' machine epsilon, as nanochat's norm uses
    final_logit_softcapping: float | None = 15.0  # 20 in G3
    layer_types: list[str] | None = None  # per layer "sliding_attention" ('S') or "full_attention" ('L')
    sliding_window: int | None = None  # keys an 'S' layer sees, itself included: nanochat's short window + 1

    # what each generation added (nanochat_generation says which one this is)
    nanochat_generation: str = "G0"
    window_pattern: str | None = None  # nanochat's own description of the windows, e.g. "SSSL"
    qk_scale: float = 1.0  # q and k multiplied after their norm: 1.15 (G4), 1.2 (G5)
    use_resid_lambdas: bool = False  # G1+: x = resid_lambdas[i] * x + x0_lambdas[i] * x0 before block i
    use_value_embeds: bool = False  # G2+: a gated per-token embedding added to the values of alternate layers
    ve_gate_scale: float = 2.0  # gate = scale * sigmoid(first channels @ ve_gate): 2 (G2, G3), 3 (G4+)
    ve_gate_channels: int = 32  # 32 (G2, G3), 12 (G4+)
    use_smear: bool = False  # G5: mix the previous token's embedding into each token's, gated by the token
    smear_channels: int = 24
    use_backout: bool = False  # G5: subtract a share of the middle layer's residual before the head

    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.rope_parameters is None:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        if self.layer_types is None:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        if "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise ValueError("layer_types has sliding_attention layers but sliding_window is not set")
        if not self.use_value_embeds:
            self.base_model_tp_plan = dict(self._head_parallel_plan)
        super().__post_init__(**kwargs)

    def has_value_embed(self, layer: int) -> bool:
        """Value embeddings sit on alternating layers, always including the last one."""
        return self.use_value_embeds and layer % 2 == (self.num_hidden_layers - 1) % 2


__all__ = ["NanoChatGPTConfig"]
