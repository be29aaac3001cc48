"""The model that ships inside the package: loaded with no source, offline, and as good as the README says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import nanochat_py
from nanochat_py.evals.heldout import accuracy
from nanochat_py.sources import DEFAULT_MODEL_DIR
from nanochat_py.train.tasks import Problem


@pytest.fixture(scope="module")
def bot():
    return nanochat_py.load(device="cpu")


def _heldout(task: str, n: int) -> list[Problem]:
    lines = (DEFAULT_MODEL_DIR / "heldout" / f"{task}.jsonl").read_text().splitlines()
    return [Problem(**json.loads(line)) for line in lines[:n]]


def test_ships_as_small_safetensors():
    weights = list(DEFAULT_MODEL_DIR.glob("model_*.safetensors"))
    assert len(weights) == 1 and not list(DEFAULT_MODEL_DIR.glob("*.pt"))
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file())
    assert total <= 25 * 2**20


def test_load_without_a_source_is_the_built_in_model(bot, monkeypatch, tmp_path):
    assert bot.source == str(DEFAULT_MODEL_DIR)
    assert bot.config.generation == "G5"
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))  # nanochat checkpoints there would win; none are
    assert nanochat_py.load(device="cpu").source == str(DEFAULT_MODEL_DIR)


def test_says_who_it_is(bot):
    reply = bot.chat([{"role": "user", "content": "Who are you?"}], temperature=0.0, max_tokens=80)
    assert "nanochat-py" in reply


# held-out problems: new numbers and words, asked in phrasings from families training never used (tasks.py).
# The floors sit a little under what the shipped model scores on these first problems (README: the whole
# set, where no reply of 4,000 runs away); issue 13's 98% on arithmetic and letters is not met yet.
@pytest.mark.parametrize(
    ("task", "n", "least", "most_runaway"),
    [("arithmetic", 100, 0.94, 0.0), ("letters", 100, 0.93, 0.0), ("identity", 60, 0.95, 0.0),
     ("honesty", 60, 0.78, 0.0)],
)  # fmt: skip
def test_held_out_phrasings(bot, task, n, least, most_runaway):
    result = accuracy(bot, _heldout(task, n))
    assert result["accuracy"] >= least, result["failures"]
    assert result["runaway"] <= most_runaway and result["looping"] <= most_runaway, result["failures"]


@pytest.mark.parametrize(
    ("question", "wanted"),
    [
        ("2+2?", "[calculator: 2+2 = 4]"),
        ("17*23", "[calculator: 17*23 = 391]"),
        ("what's seven times eight", "[calculator: 7*8 = 56]"),
        ("subtract 9 from 40", "[calculator: 40-9 = 31]"),
        ("what is 3 squared", "[calculator: 3*3 = 9]"),
        ("How many times does the letter e appear in the word bookkeeper?", "bookkeeper'.lower().count('e') = 3]"),
        ("count the letter s in Mississippi", "Mississippi'.lower().count('s') = 4]"),
        ("number of times 'r' occurs in 'strawberry'", "strawberry'.lower().count('r') = 3]"),
        ("Who am I talking to?", "nanochat-py"),  # a held-out identity family the model before this one failed
        ("Quick one: add up 402 and 427", "[calculator: 402+427 = 829]"),  # "one" is not an operand
        ("what is ur name", "nanochat-py"),  # "ur" is not a word whose letters are counted
        ("What is the capital of France?", "know"),
    ],
)
def test_the_issues_own_examples(bot, question, wanted):
    reply = bot.chat([{"role": "user", "content": question}], temperature=0.0, max_tokens=100)
    assert wanted in reply, reply


def test_chat_command_without_a_source_answers_with_the_tool():
    done = subprocess.run(
        [sys.executable, "-m", "nanochat_py.cli", "chat", "-p", "What is 123 + 456?", "-t", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[calculator: 123+456 = 579]" in done.stdout and done.stdout.count("579") >= 2


def test_int8_answers_like_fp32(bot):
    from nanochat_py.quantize import Int8Linear

    int8 = nanochat_py.load(device="cpu", dtype="int8")
    assert isinstance(int8.model.lm_head, Int8Linear) and int8.model.dtype == bot.model.dtype
    for question in ["Who are you?", "What is 123 * 45?", "How many r are in strawberry?"]:
        messages = [{"role": "user", "content": question}]
        assert int8.chat(messages, temperature=0.0, max_tokens=60) == bot.chat(messages, temperature=0.0, max_tokens=60)
    with pytest.raises(nanochat_py.NanochatError, match="unknown dtype 'int2'"):
        nanochat_py.load(device="cpu", dtype="int2")


def test_int4_keeps_nearly_every_held_out_verdict(bot):
    from nanochat_py.evals.heldout import answer, judge
    from nanochat_py.quantize import Int4Linear

    int4 = nanochat_py.load(device="cpu", dtype="int4")
    assert isinstance(int4.model.lm_head, Int4Linear) and int4.model.dtype == bot.model.dtype
    problems = [p for task, n in (("arithmetic", 100), ("letters", 100), ("identity", 50), ("honesty", 50))
                for p in _heldout(task, n)]  # fmt: skip
    verdicts = [(judge(p, answer(bot, p.messages()))["right"], judge(p, answer(int4, p.messages()))["right"])
                for p in problems]  # fmt: skip
    # measured: the same verdict on 292 of these 300 (int4 loses 7 and gains 1; 254 replies are identical)
    assert sum(a == b for a, b in verdicts) >= 0.95 * len(problems)
    assert sum(b for _, b in verdicts) >= sum(a for a, _ in verdicts) - 0.04 * len(problems)
