"""ModelConfig: the shapes of a nanochat model plus every architecture switch.

nanochat changed its architecture six times; rather than one class per generation, every change is a
field here, and `for_generation` fills in the values a given generation used. Any field can then be
overridden (from a checkpoint's meta json or by the caller), so a checkpoint we cannot tell apart from
its keys alone (G3's softcap) still runs exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

GENERATIONS = ("G0", "G1", "G1w", "G2", "G3", "G4", "G5")
MAX_DIM = 2**31 - 1  # no real model has a dimension past int32; bigger values only come from crafted files

# field kinds, checked before anything is sized from them (a meta json is untrusted input)
_WHOLE = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "padded_vocab_size",
          "mlp_hidden", "short_window", "ve_gate_channels", "smear_channels")  # fmt: skip
_POSITIVE = ("rope_base", "softcap", "qk_scale", "norm_eps", "ve_gate_scale")
_SWITCHES = ("resid_lambdas", "value_embeds", "smear", "backout")
_OPTIONAL = ("padded_vocab_size", "mlp_hidden", "short_window", "softcap", "norm_eps", "window_pattern")


@dataclass
class ModelConfig:
    # shapes
    sequence_len: int = 2048
    vocab_size: int = 65536  # real tokens; the embedding tables may be padded past this
    n_layer: int = 20
    n_head: int = 10
    n_kv_head: int = 10
    n_embd: int = 1280
    padded_vocab_size: int | None = None  # rows of wte / lm_head; None = vocab_size rounded up to 64
    mlp_hidden: int | None = None  # None = 4 * n_embd

    # architecture switches (defaults are G0, the published d20/d32/d34 models)
    generation: str = "G0"
    rope_base: float = 10000.0
    softcap: float | None = 15.0
    qk_scale: float = 1.0  # q and k are each multiplied by this after QK-norm
    norm_eps: float | None = None  # None = machine epsilon of the activation dtype (nanochat); 1e-6 in transformers
    resid_lambdas: bool = False  # per-layer x = resid_lambdas[i]*x + x0_lambdas[i]*x0
    window_pattern: str | None = None  # e.g. "SSL", tiled over layers, last layer always L; None = full attention
    short_window: int | None = None  # window of an 'S' layer, in tokens
    value_embeds: bool = False
    ve_gate_scale: float = 2.0
    ve_gate_channels: int = 32
    smear: bool = False
    smear_channels: int = 24
    backout: bool = False

    def __post_init__(self) -> None:
        self._check_types()
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.generation not in GENERATIONS:
            known = ", ".join(GENERATIONS)
            raise ValueError(f"unknown generation {short_repr(self.generation)}; expected one of {known}")
        if self.window_pattern is not None and (
            not self.window_pattern or set(self.window_pattern.upper()) - {"S", "L"}
        ):
            raise ValueError(f"window_pattern {short_repr(self.window_pattern)} may only contain the letters S and L")
        for name, used in (("ve_gate_channels", self.value_embeds), ("smear_channels", self.smear)):
            if used and getattr(self, name) > self.n_embd:  # the gates read the first channels of the stream
                raise ValueError(f"{name}={getattr(self, name)} is larger than n_embd={self.n_embd}")
        if self.padded_vocab_size is None:
            self.padded_vocab_size = -(-self.vocab_size // 64) * 64
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.n_embd
        if self.vocab_size > self.padded_vocab_size:
            raise ValueError(
                f"vocab_size {self.vocab_size} is larger than the embedding table (padded_vocab_size "
                f"{self.padded_vocab_size})"
            )

    def _check_types(self) -> None:
        """Every field has its type and a sane range, so no table is ever sized from a crafted value."""
        for name in _WHOLE:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIM:
                raise ValueError(f"{name} must be a whole number from 1 to {MAX_DIM}, not {short_repr(value)}")
        for name in _POSITIVE:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number above 0, not {short_repr(value)}")
        for name in _SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {short_repr(getattr(self, name))}")
        if not isinstance(self.window_pattern, (str, type(None))):
            raise ValueError(f"window_pattern must be a string of S and L, not {short_repr(self.window_pattern)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def window_sizes(self) -> list[int | None]:
        """How far back each layer looks: key j is visible to query t iff t - w <= j <= t; None = no limit."""
        if self.window_pattern is None:
            return [None] * self.n_layer
        pattern = self.window_pattern.upper()
        short = self.short_window if self.short_window is not None else self.sequence_len
        sizes = [short if pattern[i % len(pattern)] == "S" else self.sequence_len for i in range(self.n_layer)]
        sizes[-1] = self.sequence_len  # the reference always gives the last layer the long window
        return sizes

    def has_value_embed(self, layer: int) -> bool:
        """Value embeddings sit on alternating layers, always including the last one."""
        return self.value_embeds and layer % 2 == (self.n_layer - 1) % 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def short_repr(value, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: error messages quote bad values, never megabytes of them."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_window_for(generation: str, sequence_len: int) -> int | None:
    """Each generation sized its 'S' window differently (G4/G5 round up to flash-attention's 128 tile)."""
    if generation in ("G1w", "G2", "G3"):
        return sequence_len // 2
    if generation == "G4":
        return -(-sequence_len // (3 * 128)) * 128  # ceil(T / 3 / 128) * 128 in exact integer arithmetic
    if generation == "G5":
        return -(-sequence_len // (4 * 128)) * 128
    return None


# What each generation changed relative to G0; later generations inherit from earlier ones.
_GENERATION_CHANGES: dict[str, dict] = {
    "G0": {},
    "G1": {"resid_lambdas": True},
    "G1w": {"window_pattern": "L"},
    "G2": {"value_embeds": True, "ve_gate_scale": 2.0, "ve_gate_channels": 32},
    "G3": {"softcap": 20.0},
    "G4": {"softcap": 15.0, "ve_gate_scale": 3.0, "ve_gate_channels": 12, "qk_scale": 1.15, "rope_base": 100000.0},
    "G5": {"qk_scale": 1.2, "smear": True, "backout": True},
}


def generation_defaults(generation: str) -> dict:
    """The architecture fields of `generation`, accumulated from G0 up."""
    if generation not in GENERATIONS:
        raise ValueError(f"unknown generation {short_repr(generation)}; expected one of {', '.join(GENERATIONS)}")
    fields: dict = {"generation": generation}
    for gen in GENERATIONS[: GENERATIONS.index(generation) + 1]:
        fields.update(_GENERATION_CHANGES[gen])
    return fields


def config_for(generation: str, **fields) -> ModelConfig:
    """Build the config of `generation` with the given shapes; any field in `fields` wins over the defaults."""
    merged = generation_defaults(generation) | fields
    if merged.get("window_pattern") is not None and merged.get("short_window") is None:
        merged["short_window"] = short_window_for(generation, merged.get("sequence_len", ModelConfig.sequence_len))
    return ModelConfig(**merged)
