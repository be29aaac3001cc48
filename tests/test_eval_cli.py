"""`nanochat-py eval`: CORE from a bundle, the chat suite's dispatch, and what --out DIR gets (eval.json, nanochat's
report card, a Hugging Face model card that the Hub's parser accepts, the PNG)."""

from __future__ import annotations

import json
import sys
import types

import pytest
import yaml

from conftest import FIXTURES, G0
from nanochat_py.cli import main
from nanochat_py.evals.scores import TaskScore

BUNDLE = FIXTURES / "core" / "eval_bundle"
CHAT = ("arc-easy", "arc-challenge", "mmlu", "gsm8k", "humaneval", "spellingbee")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def core_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("core") / "out"
    code = main(["eval", "--source", str(G0 / "model"), "--task", "core", "--bundle", str(BUNDLE),
                 "--max-per-task", "7", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_core_run_writes_nanochats_numbers(core_run):
    """--max-per-task 7 is the reference's max_per_task=7 run of the same model and bundle (the fixture's)."""
    got = json.loads((core_run / "eval.json").read_text())
    want = json.loads((FIXTURES / "core" / "expected_g0.json").read_text())["settings"]["subset"]
    assert got["core"] == pytest.approx(want["core"], abs=1e-6)
    assert set(got["tasks"]) == set(want["tasks"])
    for label, task in got["tasks"].items():
        assert task["accuracy"] == pytest.approx(want["tasks"][label]["accuracy"], abs=1e-6)
        assert task["centered"] == pytest.approx(want["tasks"][label]["centered"], abs=1e-6)
        assert (task["task"], task["n"], task["suite"]) == (label, 7, "core")
        assert task["random_baseline"] in (0.0, 0.25, 0.5)
    assert got["stage"] == "unknown" and got["device"] == "cpu" and got["dtype"] == "float32"


def test_report_card_is_nanochats_table(core_run):
    report = (core_run / "report.md").read_text()
    core = json.loads((core_run / "eval.json").read_text())["core"]
    lines = report.splitlines()
    table = lines[lines.index("## Summary") + 2 :]
    assert table[0] == "| Metric          | BASE     | SFT      | RL       |"
    assert table[1] == "|-----------------|----------|----------|----------|"
    assert table[2] == f"| CORE            | {core:<8.4f} | -        | -        |"
    assert f"- CORE metric: {core:.4f}" in lines and "## Base model evaluation" in lines


def test_model_card_front_matter_is_valid_model_index(core_run):
    text = (core_run / "model_card.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    core = json.loads((core_run / "eval.json").read_text())["core"]
    assert meta["model-index"][0]["name"] == "model"
    assert meta["model-index"][0]["results"][0]["metrics"][0] == {
        "type": "core",
        "value": round(core, 4),
        "name": "CORE",
    }
    hub = pytest.importorskip("huggingface_hub")
    card = hub.ModelCard(text)
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.task_type) == ("core", round(core, 4), "text-generation")
    assert hub.metadata_load(core_run / "model_card.md")["pipeline_tag"] == "text-generation"
    assert (core_run / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chat_tasks_go_to_the_chat_suite_and_make_chatcore(tmp_path, monkeypatch):
    calls = []
    accuracies = {
        "arc-easy": 0.5,
        "arc-challenge": 0.25,
        "mmlu": 0.4,
        "gsm8k": 0.1,
        "humaneval": 0.05,
        "spellingbee": 0.3,
    }
    labels = {"arc-easy": "ARC-Easy", "arc-challenge": "ARC-Challenge", "mmlu": "MMLU", "gsm8k": "GSM8K",
              "humaneval": "HumanEval", "spellingbee": "SpellingBee"}  # fmt: skip

    def stub(bot, task, *, data, limit, seed=0, **_):
        calls.append((task, data, limit, seed))
        baseline = 0.25 if task in ("arc-easy", "arc-challenge", "mmlu") else 0.0
        return TaskScore(labels[task], accuracies[task], limit, baseline)

    # the chat suite's module stands in as a stub: this tests the dispatch, tests/test_eval_chat.py the suite
    monkeypatch.setitem(sys.modules, "nanochat_py.evals.chat_tasks", types.SimpleNamespace(evaluate=stub))
    out = tmp_path / "chat"
    code = main(["eval", "--source", str(G0 / "model"), "--task", ",".join(CHAT), "--data", str(tmp_path),
                 "--max-per-task", "3", "--seed", "5", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert calls == [(t, tmp_path, 3, 5) for t in CHAT]
    got = json.loads((out / "eval.json").read_text())
    # nanochat's ChatCORE: the mean of the six accuracies centred on 1/4 (multiple choice) or 0 (open answers)
    centred = [(0.5 - 0.25) / 0.75, 0.0, (0.4 - 0.25) / 0.75, 0.1, 0.05, 0.3]
    assert got["chatcore"] == pytest.approx(sum(centred) / 6)
    assert got["tasks"]["MMLU"] == {"task": "MMLU", "accuracy": 0.4, "n": 3, "random_baseline": 0.25,
                                    "centered": pytest.approx(0.2), "suite": "chatcore"}  # fmt: skip
    report = (out / "report.md").read_text().splitlines()
    assert "| ARC-Easy        | -        | 0.5000   | -        |" in report  # no stage in the meta: the SFT column
    assert report[-2] == f"| ChatCORE        | -        | {got['chatcore']:<8.4f} | -        |"
    assert "## Chat evaluation sft" in report
    results = yaml.safe_load((out / "model_card.md").read_text().split("---\n")[1])["model-index"][0]["results"]
    arc = next(r for r in results if r["dataset"]["name"] == "ARC-Easy")
    assert arc["dataset"] == {"name": "ARC-Easy", "type": "allenai/ai2_arc", "config": "ARC-Easy", "split": "test"}
    # fewer than the six: no ChatCORE, as nanochat
    calls.clear()
    assert main(["eval", "--source", str(G0 / "model"), "--task", "mmlu", "--device", "cpu", "--out", str(out)]) == 0
    assert "chatcore" not in json.loads((out / "eval.json").read_text()) and calls == [("mmlu", None, None, 0)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "core,hellaswag"], "unknown task(s) hellaswag; choose from core, arc-easy"),
        (["--task", "core", "--bundle", "/nonexistent/eval_bundle.zip"], "eval bundle /nonexistent/eval_bundle.zip"),
        (["--max-per-task", "0"], "argument --max-per-task: 0 is out of range: it must be at least 1"),
    ],
)
def test_bad_input_is_one_error_line(argv, message, capsys, tmp_path):
    try:
        code = main(["eval", "--source", str(G0 / "model"), "--out", str(tmp_path), *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("nanochat-py: error: ") and message in err and err.count("\n") == 1
