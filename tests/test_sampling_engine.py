"""The sampling controls through the engine, the Python API and the CLI: a greedy decode with the penalties
equals a plain loop over full forward passes with transformers' repetition processor and OpenAI's formula;
defaults leave the seeded draws (the reference's) as they were; out-of-range flags are one error line."""

from __future__ import annotations

import subprocess

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

import nanochat_py as nc
from conftest import G5
from nanochat_py.cli import main

PROMPT = [1015, 1016, 300, 301, 302, 1017, 1018]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def bot() -> nc.Chatbot:
    return nc.load(G5 / "model", device="cpu")


def greedy_by_hand(bot, prompt: list[int], steps: int, repetition: float, presence: float, frequency: float):
    """The definitions, step by step: the whole text through the model each step (no KV cache), padded to one
    length (a causal model's logits at a position do not depend on what follows it)."""
    ids, reply = list(prompt), []
    for _ in range(steps):  # (called under inference_mode)
        padded = torch.tensor([ids + [0] * (len(prompt) + steps - len(ids))])
        logits = bot.model(padded)[:, len(ids) - 1]
        logits = RepetitionPenaltyLogitsProcessor(repetition)(torch.tensor([ids]), logits)
        counts = torch.bincount(torch.tensor(reply, dtype=torch.long), minlength=logits.shape[1]).float()
        logits = logits - counts * frequency - (counts > 0) * presence
        token = int(logits.argmax())
        ids.append(token)
        reply.append(token)
    return reply


@pytest.mark.parametrize("repetition,presence,frequency", [(1.6, 0.0, 0.0), (1.0, 0.0, 1.2), (1.3, -0.5, 0.8),
                                                           (0.8, 0.0, 0.0)])  # fmt: skip
def test_greedy_with_penalties_equals_the_definitions(bot, repetition, presence, frequency):
    controls = dict(repetition_penalty=repetition, presence_penalty=presence, frequency_penalty=frequency)
    ours = bot.generate(PROMPT, max_tokens=24, temperature=0, use_tools=False, **controls)
    plain = bot.generate(PROMPT, max_tokens=24, temperature=0, use_tools=False)
    assert ours != plain  # the penalties changed the reply, so the comparison below means something
    with torch.inference_mode():
        expected = greedy_by_hand(bot, PROMPT, len(ours), repetition, presence, frequency)
    assert ours == expected


def test_each_sample_of_a_batch_counts_its_own_tokens(bot):
    """Greedy samples decoded as one batch are each the single greedy reply: a history shared by the rows (three
    times the counts) would penalise them differently."""
    controls = dict(temperature=0, frequency_penalty=1.2, presence_penalty=0.3, repetition_penalty=1.3)
    alone = bot.generate(PROMPT, max_tokens=24, use_tools=False, **controls)
    assert bot.sample(PROMPT, 3, max_tokens=24, use_tools=False, **controls) == [alone] * 3


def test_neutral_values_keep_the_seeded_draws(bot):
    """Sending the neutral values is the same as leaving them out: the reference's draws stay the same."""
    plain = bot.generate(PROMPT, max_tokens=40, temperature=0.9, top_k=50, seed=11)
    neutral = bot.generate(PROMPT, max_tokens=40, temperature=0.9, top_k=50, seed=11, min_p=0.0,
                           repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)  # fmt: skip
    assert neutral == plain
    assert bot.generate(PROMPT, max_tokens=40, temperature=0.9, top_k=50, seed=11, min_p=0.2) != plain


def test_chat_takes_the_controls(bot):
    controls = dict(temperature=0.8, seed=3, min_p=0.1, repetition_penalty=1.2, presence_penalty=0.3,
                    frequency_penalty=0.3, max_tokens=20)  # fmt: skip
    text = bot.chat(HI, **controls)
    assert text == "".join(bot.chat(HI, stream=True, **controls))
    assert [p.text for p in bot.reply(HI, **controls)]  # the same keywords reach the engine through reply


def run_here(capfd, *args: str) -> subprocess.CompletedProcess:
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_chat_flags_reach_the_model(capfd, bot):
    flags = ["--min-p", "0.1", "--repetition-penalty", "1.4", "--presence-penalty", "0.5", "--frequency-penalty",
             "-0.5", "--temperature", "0.7", "--seed", "5", "-m", "24"]  # fmt: skip
    result = run_here(capfd, "chat", "-s", str(G5 / "model"), "-p", "hi", *flags)
    assert result.returncode == 0, result.stderr
    expected = bot.chat(HI, temperature=0.7, top_k=50, seed=5, max_tokens=24, min_p=0.1, repetition_penalty=1.4,
                        presence_penalty=0.5, frequency_penalty=-0.5)  # fmt: skip
    assert result.stdout == expected + "\n"


@pytest.mark.parametrize("command", ["chat", "serve"])
@pytest.mark.parametrize("flag,value", [("--min-p", "1.5"), ("--min-p", "-0.1"), ("--repetition-penalty", "0"),
                                        ("--repetition-penalty", "2.5"), ("--presence-penalty", "-2.1"),
                                        ("--frequency-penalty", "3"), ("--frequency-penalty", "nan")])  # fmt: skip
def test_out_of_range_flags_are_one_error_line(capfd, command, flag, value):
    result = run_here(
        capfd, command, "-s", str(G5 / "model"), flag, value, *(["-p", "hi"] if command == "chat" else [])
    )
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanochat-py: error: ") and flag in lines[0], result.stderr
