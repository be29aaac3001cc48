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


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_layer", 0, "n_layer must be a whole number from 1"),
        ("n_layer", -3, "n_layer must be a whole number from 1"),
        ("n_head", 2.5, "n_head must be a whole number"),
        ("n_head", True, "n_head must be a whole number"),
        ("n_embd", "512", "n_embd must be a whole number"),
        ("vocab_size", 10**30, "vocab_size must be a whole number from 1 to 2147483647"),
        ("sequence_len", 1e8, "sequence_len must be a whole number"),
        ("mlp_hidden", 0, "mlp_hidden must be a whole number"),
        ("rope_base", float("nan"), "rope_base must be a finite number above 0"),
        ("softcap", -1.0, "softcap must be a finite number above 0"),
        ("qk_scale", float("inf"), "qk_scale must be a finite number above 0"),
        ("smear", "yes", "smear must be true or false"),
        ("window_pattern", 7, "window_pattern must be a string"),
        ("ve_gate_channels", 4096, "ve_gate_channels=4096 is larger than n_embd=512"),
    ],
)
def test_fields_of_the_wrong_type_or_range_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        config_for("G5", **{**SHAPE, "sequence_len": 64, field: value})


def test_a_huge_bad_value_is_not_echoed_in_full():
    with pytest.raises(ValueError) as err:
        config_for("G5", sequence_len=64, window_pattern="X" * 100_000, **SHAPE)
    assert len(str(err.value)) < 300
