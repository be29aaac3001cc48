"""Every reference fixture: logits, greedy generations and chat rendering match nanochat's own code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nanochat_py as nc
from conftest import expected, parity_dirs

FIXTURES = parity_dirs()


def _load(fixture) -> nc.Chatbot:
    return nc.load(fixture / "model", device="cpu", **expected(fixture).get("overrides", {}))


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_logits_match_reference(fixture):
    bot = _load(fixture)
    data = np.load(fixture / "expected.npz")
    for n in (5, 60, 200):
        ids = torch.from_numpy(data[f"seq{n}_ids"])[None]
        with torch.no_grad():
            logits = bot.model(ids)[0].numpy()
        want = data[f"seq{n}_logits"]
        assert logits.shape == want.shape
        assert np.abs(logits - want).max() <= 1e-4, f"seq{n}: max |dlogit| {np.abs(logits - want).max()}"


def _until_stop(tokens: list[int], bot: nc.Chatbot) -> list[int]:
    stops = bot.engine.stop_ids
    return tokens[: next((i for i, t in enumerate(tokens) if t in stops), len(tokens))]


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_greedy_generations_match_reference(fixture):
    bot = _load(fixture)
    for name, gen in expected(fixture)["generations"].items():
        want = _until_stop(gen["completion"], bot)
        got = bot.generate(gen["prompt"], max_tokens=len(gen["completion"]), temperature=0, use_tools=False)
        assert got == want, name
        if "reference_engine_completion" in gen:  # the reference engine runs the calculator tool too
            ref = _until_stop(gen["reference_engine_completion"], bot)
            assert bot.generate(gen["prompt"], max_tokens=len(gen["completion"]), temperature=0) == ref


# the two shared fixtures were delivered with a wrong render_ids field (the first 180 ids of seq200)
WRONG_RENDER_IDS = {"g_2c4473d", "g_92d63d4"}
GENERATION_OF_SHARED = {"g_2c4473d": "G0", "g_92d63d4": "G5"}  # the others say so in expected.json


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_chat_rendering_and_encodings_match_reference(fixture):
    want = expected(fixture)
    tok = nc.load_tokenizer(fixture / "model")
    ids, mask = tok.render_conversation(want["conversation"])
    assert mask == want["render_mask"]
    # the chat prompt is the reference's render_for_completion of the same conversation
    prompt = want["generations"]["chat"]["prompt"]
    assert tok.render_for_completion(want["conversation"]) == prompt
    assert ids == (prompt[:-1] if fixture.name in WRONG_RENDER_IDS else want["render_ids"])
    for text, ids in want["encodings"].items():
        assert tok.encode(text) == ids
    assert tok.bos_token_id == want["bos"]
    assert tok.vocab_size == want["vocab_size"]


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_generation_is_detected(fixture):
    want = expected(fixture).get("generation") or GENERATION_OF_SHARED[fixture.name]
    assert _load(fixture).config.generation == want
