"""The built-in model's generated data and how its held-out replies are judged: the held-out side shares no
question family, arithmetic problem or word with training; every generated tool call computes the answer;
and the judge refuses a reply that is wrong in any one way."""

from __future__ import annotations

import random

import pytest
import torch

from nanochat_py.evals.heldout import Reply, judge, repeats
from nanochat_py.tools import calculate
from nanochat_py.train import phrasing, tasks
from nanochat_py.train.data import TokenRows, mixed_rows

WORDS = [f"{a}{b}{c}{d}" for a in "bcdfgm" for b in "aeiou" for c in "lnrst" for d in ("", "e", "s", "er")]


def test_numbers_in_words():
    assert [phrasing.in_words(n) for n in (0, 7, 13, 20, 42, 100, 305, 999)] == [
        "zero", "seven", "thirteen", "twenty", "forty-two", "one hundred", "three hundred and five",
        "nine hundred and ninety-nine"]  # fmt: skip
    with pytest.raises(ValueError):
        phrasing.in_words(1000)


def _picks(monkeypatch) -> list[phrasing.Family]:
    """Record every family the generators pick."""
    seen, real = [], phrasing.pick

    def recording(rng, options, split):
        family = real(rng, options, split)
        seen.append(family)
        return family

    monkeypatch.setattr(tasks, "pick", recording)
    return seen


def test_training_never_uses_a_held_out_family_and_evaluation_only_uses_them(monkeypatch):
    seen = _picks(monkeypatch)
    tasks.conversations(3000, WORDS, seed=3)
    assert len(seen) > 2000 and not any(f.held_out for f in seen)
    names = {f.name for f in seen}
    seen.clear()
    held = [p for task in tasks.TASKS for p in tasks.problems(task, 300, WORDS, seed=4)]
    last_turns = [f for f in seen if f.held_out]
    assert len(last_turns) >= len(held), "every held-out question is asked in a held-out family"
    assert not {f.name for f in last_turns} & names


def test_held_out_problems_and_words_never_appear_in_training():
    held = tasks.problems("arithmetic", 500, seed=9) + tasks.problems("letters", 500, WORDS, seed=9)
    held_calls = {p.call for p in held}
    for conv in tasks.conversations(3000, WORDS, seed=11):
        for m in conv["messages"]:
            for part in m["content"] if isinstance(m["content"], list) else []:
                if part["type"] == "python":
                    # the same computation in any order is the same problem
                    assert not any(tasks.same_call(call, part["text"]) for call in held_calls), part["text"]
                    if ".count" in part["text"]:
                        assert not tasks.held_out(part["text"].split("'")[1].strip().lower())


def test_every_generated_tool_call_computes_the_answer():
    for conv in tasks.conversations(2000, WORDS, seed=5):
        parts = [p for m in conv["messages"] if isinstance(m["content"], list) for p in m["content"]]
        for call, output in zip(parts[0::3], parts[1::3], strict=True):
            assert call["type"] == "python" and output["type"] == "python_output"
            assert calculate(call["text"]) == output["text"], call["text"]
    for p in tasks.problems("arithmetic", 300, seed=6) + tasks.problems("letters", 300, WORDS, seed=6):
        assert calculate(p.call) == p.answer, (p.question, p.call)


def test_letter_calls_carry_the_word_as_typed():
    rng = random.Random(0)
    pools = tasks.split_words(WORDS)
    for _ in range(300):
        p = tasks.letter_problem(rng, pools, "eval")
        word = p.call.split("'")[1].strip()
        assert word in p.question and word.lower() in WORDS


def test_held_out_problems_do_not_move_when_the_training_data_changes(monkeypatch):
    """Earlier turns come from the training mixture; a change to it must not redraw the held-out set."""
    before = [p.to_dict() for task in tasks.TASKS for p in tasks.problems(task, 200, WORDS, seed=4)]
    monkeypatch.setattr(tasks, "EXTRA_CAPS", 0.9)  # the training side asks differently ...
    monkeypatch.setattr(tasks, "TRICKY_SHARE", 0.9)
    after = [p.to_dict() for task in tasks.TASKS for p in tasks.problems(task, 200, WORDS, seed=4)]
    assert [(p["question"], p["call"]) for p in after] == [(p["question"], p["call"]) for p in before]
    assert any(p.get("history") != q.get("history") for p, q in zip(before, after, strict=True))  # ... it did


def test_training_asks_in_capitals_and_about_words_that_start_like_short_words():
    users = [m["content"] for c in tasks.conversations(3000, WORDS + ["inlet", "often", "tonic"], seed=8)
             for m in c["messages"] if m["role"] == "user"]  # fmt: skip
    caps = [q for q in users if q.strip().isupper()]
    assert 0.055 < len(caps) / len(users) < 0.1  # 3.4% from typed() alone (letter questions keep the word)
    tricky = [q for q in users if any(w in q.lower() for w in ("inlet", "often", "tonic"))]
    assert len(tricky) > 50  # 3 words among ~470 training words, yet a tenth of the letter questions
    assert tasks.split_words(["inlet", "bale"])["train-tricky"] == ["inlet"]


def test_questions_vary_like_typing():
    questions = [p.question for p in tasks.problems("arithmetic", 400, seed=2)]
    assert any(q.endswith("\n") for q in questions) and any("  " in q for q in questions)
    assert any(q.islower() for q in questions) and any(not q.rstrip().endswith(("?", ".")) for q in questions)
    assert any(w in " ".join(questions) for w in ("seven", "twelve", "forty"))


def _reply(text: str, calls=(), ended=True) -> Reply:
    return Reply(text, list(calls), ended, tokens=len(text.split()))


def test_the_judge_wants_every_criterion():
    p = tasks.Problem("arithmetic", "What's seven times eight?", "56", "7*8")
    assert judge(p, _reply("7 * 8 = 56.", ["7*8"]))["right"]
    assert judge(p, _reply("56", ["8 * 7"]))["right"]  # the same call, the other way round
    assert not judge(p, _reply("56", ["56"]))["call"]  # not the user's numbers
    assert not judge(p, _reply("56"))["call"]  # no tool call
    assert not judge(p, _reply("57", ["7*8"]))["answer"]
    assert not judge(p, _reply("56", ["7*8"], ended=False))["ended"]
    assert not judge(p, _reply("56 is 56 is 56 is 56 is 56 is 56 is 56 is 56", ["7*8"]))["no_loop"]
    minus = tasks.Problem("arithmetic", "subtract 9 from 40", "31", "40-9")
    assert not judge(minus, _reply("31", ["9-40"]))["call"]  # order matters for minus
    letters = tasks.Problem("letters", "how many r's in 'Strawberry'?", "3", "'Strawberry'.lower().count('r')")
    assert judge(letters, _reply("3", ["' strawberry'.lower().count('r')"]))["right"]
    assert not judge(letters, _reply("3", ["' the strawberry'.lower().count('r')"]))["call"]
    honest = tasks.Problem("honesty", "What is the capital of Peru?", "")
    assert judge(honest, _reply("I don't know."))["right"]
    assert not judge(honest, _reply("I don't know.", ["2+2"]))["right"]  # invented arithmetic
    assert not judge(honest, _reply("Lima."))["right"]


def test_repeats_counts_the_most_frequent_four_words():
    assert repeats("There are 3 r's in strawberry.") == 1
    assert repeats("a b c d a b c d a b c d") == 3


def test_mixed_rows_holds_the_asked_share_of_text():
    conv = TokenRows(torch.zeros(30, 9, dtype=torch.long), torch.zeros(30, 9, dtype=torch.long))
    text = TokenRows(torch.ones(7, 9, dtype=torch.long), torch.ones(7, 9, dtype=torch.long))
    mixed = mixed_rows(conv, text, 0.25)
    assert len(mixed) == 40 and int((mixed.rows[:, 0] == 1).sum()) == 10  # 10 of 40 rows; the 7 cycle
    assert int(mixed.mask[30:].sum()) == 10 * 9  # text rows are trained on in full
    with pytest.raises(Exception, match="text-share"):
        mixed_rows(conv, text, 1.0)


def test_training_has_questions_that_look_like_another_skill():
    """Hard negatives: "one" and "number" that are not operands, "is ... in {country}" and plural nouns after
    "how many" that are not letter counting, "a"/"u" that are words: the tiny model otherwise reaches for the
    letter tool (or reads "one" as 1) whenever a question has one of these."""
    convs = tasks.conversations(6000, WORDS, seed=12)
    firsts = [c["messages"][:2] for c in convs]
    calls = {m[0]["content"]: m[1]["content"][0]["text"] for m in firsts if isinstance(m[1]["content"], list)}
    one_not_operand = [q for q, call in calls.items() if " one " in f" {q.lower()} " and "1" not in call.split("'")[0]]
    assert len([q for q in one_not_operand if "number" not in q.lower()]) > 20
    assert len([q for q, call in calls.items() if "number " in q.lower() and ".count(" not in call]) > 50
    plain = [m[0]["content"].lower() for m in firsts if isinstance(m[1]["content"], str)]
    countries = [c.lower() for c in tasks.COUNTRIES]
    assert len([q for q in plain if " is " in q and any(f" in {c}" in q for c in countries)]) > 20
    assert len([q for q in plain if q.strip().startswith("how many") and "there in" in q]) > 20
    assert any("ur name" in q for q in plain) and any(q.strip().startswith("u a bot") for q in plain)
