"""ChatCORE: every scored item equals what nanochat's own chat_eval.py gives for the same model and data.

The fixtures (tests/fixtures/chat_eval/, see its README) were made by running the reference on hand-made
items in the Hub datasets' own files: per item the question, the letter chosen or the reply, and the verdict,
for a G0 and a G5 random-weight model and the built-in model (which calls the calculator), plus the
reference's own graders on hand-written replies, its item orders and its calculator's answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import nanochat_py
from conftest import FIXTURES, G0, G5
from nanochat_py.errors import NanochatError
from nanochat_py.evals import chat_tasks
from nanochat_py.evals.chat_tasks import TASKS, evaluate, final_number, nanochat_calculator, score_items
from nanochat_py.evals.datasets import SPLITS, DataError, load_rows, load_words
from nanochat_py.evals.scores import TaskScore

HERE = FIXTURES / "chat_eval"
DATA = HERE / "data"
GRADING = json.loads((HERE / "expected" / "grading.json").read_text(encoding="utf-8"))
MODELS = {"g0": G0 / "model", "g5": G5 / "model", "builtin": None}


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_runs(name: str) -> list[dict]:
    return json.loads((HERE / "expected" / f"{name}.json").read_text(encoding="utf-8"))["results"]


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_runs(request):
    source = MODELS[request.param]
    bot = nanochat_py.load(str(source) if source else None, device="cpu")
    return bot, reference_runs(request.param)


# --- the model's answers ---------------------------------------------------------------------------------------


def test_every_item_scores_as_in_the_reference(model_and_runs):
    bot, runs = model_and_runs
    assert {run["task"] for run in runs} == set(TASKS)
    for run in runs:
        ours = score_items(
            bot, run["task"], data=DATA, limit=run["max_problems"], max_tokens=run["max_new_tokens"] or 512
        )
        where = f"{run['task']} (max {run['max_new_tokens']} tokens)"
        assert [o.question for o in ours] == [item["question"] for item in run["items"]], where
        for o, item in zip(ours, run["items"], strict=True):
            assert chat_tasks.prompt_ids(bot.tokenizer, o.question) == item["prompt_ids"], where
            assert (o.response, o.correct) == (item["response"], item["correct"]), f"{where}: {o.question!r}"


def test_the_builtin_model_calls_the_calculator_and_gets_nanochats_answers():
    """The built-in model's replies hold tool calls with answers forced in, and refused calls with none."""
    replies = [i["response"] for run in reference_runs("builtin") for i in run["items"] if run["task"] != "mmlu"]
    assert sum("<|output_start|>" in r for r in replies) >= 10
    answered = [r for r in replies if "<|python_end|><|output_start|>" in r]
    unanswered = [r for r in replies if "<|python_end|>" in r and "<|python_end|><|output_start|>" not in r]
    assert answered and unanswered


def test_evaluate_reports_the_label_baseline_and_accuracy_of_the_first_n_items():
    bot = nanochat_py.load(device="cpu")
    run = next(r for r in reference_runs("builtin") if r["task"] == "arc-easy")
    score = evaluate(bot, "arc-easy", data=DATA, limit=5)
    first = [item["correct"] for item in run["items"][:5]]
    assert score == TaskScore("ARC-Easy", sum(first) / 5, 5, 0.25)
    with pytest.raises(DataError, match="at least 1"):
        evaluate(bot, "arc-easy", data=DATA, limit=0)
    with pytest.raises(NanochatError, match="unknown chat task"):
        evaluate(bot, "trivia", data=DATA)


def test_chatcore_is_the_mean_centered_accuracy_of_all_six():
    scores = [
        TaskScore(t.label, acc, 10, t.baseline)
        for t, acc in zip(TASKS.values(), [0.5, 0.4, 0.3, 0.2, 0.1, 0], strict=True)
    ]
    centered = [(0.5 - 0.25) / 0.75, (0.4 - 0.25) / 0.75, (0.3 - 0.25) / 0.75, 0.2, 0.1, 0.0]
    assert chat_tasks.chatcore(scores) == pytest.approx(sum(centered) / 6)
    assert chat_tasks.chatcore(scores[:5]) is None


# --- items and grading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(SPLITS))
def test_items_come_in_the_order_of_nanochats_shuffle(task):
    items = TASKS[task].items(DATA, None)
    assert [item.question for item in items] == GRADING["orders"][task]
    assert [item.question for item in TASKS[task].items(DATA, 3)] == GRADING["orders"][task][:3]


def test_spelling_bee_questions_and_answers_are_nanochats():
    words = load_words(DATA)
    for i, expected in enumerate(GRADING["spellingbee"]):
        item = chat_tasks.spelling_bee_item(words, i)
        assert (item.question, item.solution) == (expected["question"], final_number(expected["solution"])), i


@pytest.mark.parametrize("task", ["gsm8k", "spellingbee", "humaneval"])
def test_replies_are_graded_as_nanochat_grades_them(task):
    items = {item.question: item for item in TASKS[task].items(DATA, None)}
    graded = GRADING["graded"][task]
    assert {g["correct"] for g in graded} == {True, False}
    for g in graded:
        assert chat_tasks.is_correct(TASKS[task], items[g["question"]], g["reply"]) == g["correct"], g["reply"]


def test_calculator_answers_as_nanochats():
    for call in GRADING["calculator"]:
        assert nanochat_calculator(call["call"]) == call["answer"], call["call"]


# --- data: local files in the Hub's layout, JSON lines, the Hugging Face cache ----------------------------------


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_json_lines_and_single_files_read_the_same_rows(tmp_path):
    parquet = DATA / "gsm8k" / "main" / "test-00000-of-00001.parquet"
    jsonl = tmp_path / "gsm8k" / "main" / "test.jsonl"
    jsonl.parent.mkdir(parents=True)
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _rows(parquet)))
    expected = _rows(parquet)
    assert load_rows(SPLITS["gsm8k"], tmp_path) == expected  # the layout under a common folder
    assert load_rows(SPLITS["gsm8k"], jsonl.parent) == expected  # the config folder itself
    assert load_rows(SPLITS["gsm8k"], parquet) == expected  # a file


def test_missing_or_malformed_local_data_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"cais/mmlu \(all, test\).*mmlu/all/test-00000-of-00001.parquet"):
        load_rows(SPLITS["mmlu"], tmp_path)
    bad = tmp_path / "mmlu" / "all" / "test.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"question": "q", "choices": ["a"]}) + "\n")
    with pytest.raises(DataError, match="no column subject, answer"):
        load_rows(SPLITS["mmlu"], tmp_path)
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="cannot read it"):
        load_rows(SPLITS["mmlu"], tmp_path)
    with pytest.raises(DataError, match=r"words_alpha.txt.*--data"):
        load_words(tmp_path)


def test_word_list_is_read_from_nanochats_base_dir_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    with pytest.raises(DataError, match="english-words"):
        load_words(None)
    shutil.copy(DATA / "words_alpha.txt", tmp_path / "words_alpha.txt")
    assert load_words(None) == load_words(DATA / "words_alpha.txt")
    assert "strawberry" in load_words(None)  # Windows line ends stripped, as nanochat strips them


def _fake_hub_cache(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """The Hugging Face cache's layout: blobs, a snapshot of symlinks to them, and refs/main."""
    root = cache / f"datasets--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    for i, (name, source) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, blob)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_offline_data_comes_from_the_hugging_face_cache(tmp_path):
    cache = tmp_path / "hub"
    arc = DATA / "ai2_arc" / "ARC-Easy" / "test-00000-of-00001.parquet"
    _fake_hub_cache(cache, "allenai/ai2_arc", {"ARC-Easy/test-00000-of-00001.parquet": arc})
    script = (
        "import json, sys\n"
        "from nanochat_py.evals.datasets import SPLITS, DataError, load_rows\n"
        "rows = load_rows(SPLITS['arc-easy'], None)\n"
        "try:\n    load_rows(SPLITS['mmlu'], None)\nexcept DataError as e:\n    error = str(e)\n"
        "json.dump({'rows': rows, 'error': error}, sys.stdout)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["rows"] == _rows(arc)
    assert "cais/mmlu" in out["error"] and "--data" in out["error"] and "HF_HUB_OFFLINE" in out["error"]
