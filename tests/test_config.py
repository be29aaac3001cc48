"""Per-generation architecture switches, checked against values stated in the reference's own code and comments."""

from __future__ import annotations

import pytest

from nanochat_py.config import config_for

SHAPE = dict(vocab_size=65536, n_layer=8, n_head=8, n_kv_head=8, n_embd=512)


@pytest.mark.parametrize(
    ("generation", "short"),
    [("G1w", 1024), ("G2", 1024), ("G3", 1024), ("G4", 768), ("G5", 512)],  # "2048 -> 768" is the G4 comment
)
def test_short_window_rule_at_2048(generation, short):
    cfg = config_for(generation, sequence_len=2048, window_pattern="SSSL", **SHAPE)
    assert cfg.window_sizes() == [short, short, short, 2048, short, short, short, 2048]


def test_last_layer_is_always_long_and_no_pattern_means_no_window():
    assert config_for("G5", sequence_len=1000, window_pattern="S", **SHAPE).window_sizes()[-1] == 1000
    assert config_for("G5", sequence_len=1000, window_pattern="S", **SHAPE).window_sizes()[0] == 256  # ceil to 128
    assert config_for("G0", sequence_len=2048, **SHAPE).window_sizes() == [None] * 8
    assert config_for("G1", sequence_len=2048, **SHAPE).window_sizes() == [None] * 8


def test_value_embeddings_alternate_and_include_the_last_layer():
    for n_layer, layers in ((4, [1, 3]), (5, [0, 2, 4])):
        cfg = config_for("G2", sequence_len=256, **{**SHAPE, "n_layer": n_layer})
        assert [i for i in range(n_layer) if cfg.has_value_embed(i)] == layers


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ("G0", dict(rope_base=10000.0, softcap=15.0, qk_scale=1.0, resid_lambdas=False, value_embeds=False)),
        ("G2", dict(rope_base=10000.0, softcap=15.0, ve_gate_scale=2.0, ve_gate_channels=32, smear=False)),
        ("G3", dict(softcap=20.0, ve_gate_channels=32)),
        ("G4", dict(rope_base=100000.0, softcap=15.0, qk_scale=1.15, ve_gate_scale=3.0, ve_gate_channels=12)),
        ("G5", dict(rope_base=100000.0, softcap=15.0, qk_scale=1.2, smear=True, backout=True, resid_lambdas=True)),
    ],
)
def test_generation_defaults(generation, expected):
    cfg = config_for(generation, sequence_len=2048, **SHAPE)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="not a multiple of n_kv_head"):
        config_for("G0", sequence_len=64, **{**SHAPE, "n_kv_head": 3})
    with pytest.raises(ValueError, match="S and L"):
        config_for("G5", sequence_len=64, window_pattern="SXL", **SHAPE)
