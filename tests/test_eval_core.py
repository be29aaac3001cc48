"""CORE and bits per byte against nanochat itself: every item of a synthetic eval bundle (all three task types,
zero- and few-shot, prompts up to 1.7x the context) comes out as the reference's core_eval scores it, for a G0 and
a G5 model; bpb equals the reference's loss_eval. Fixtures: tests/fixtures/core/ (see its make_core_fixtures.py)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

import nanochat_py
from conftest import FIXTURES, G0, G5
from nanochat_py.errors import NanochatError
from nanochat_py.evals import bundle as bundle_module
from nanochat_py.evals.bpb import bits_per_byte, read_texts, text_rows, token_bytes
from nanochat_py.evals.bundle import fetch_bundle, find_bundle, read_bundle
from nanochat_py.evals.core import evaluate_core, evaluate_task
from nanochat_py.evals.prompts import item_spans, task_order
from nanochat_py.train.data import TokenRows

CORE = FIXTURES / "core"
BUNDLE = CORE / "eval_bundle"
MODELS = {"g0": G0, "g5": G5}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tasks():
    return read_bundle(BUNDLE)


@pytest.fixture(scope="module")
def bots():
    return {name: nanochat_py.load(path / "model", device="cpu", dtype="fp32") for name, path in MODELS.items()}


def _expected(model: str) -> dict:
    return json.loads((CORE / f"expected_{model}.json").read_text())


def test_the_bundle_has_every_task_type_with_and_without_few_shot(tasks):
    kinds = {(t.kind, t.num_fewshot > 0) for t in tasks}
    assert kinds == {(k, s) for k in ("multiple_choice", "schema", "language_modeling") for s in (False, True)}
    assert {t.label: t.random_baseline for t in tasks}["schema_zeroshot"] == pytest.approx(0.5)
    assert {t.label: t.delimiter for t in tasks}["mc_zeroshot"] == " "  # core.yaml leaves it out: nanochat's default


@pytest.mark.parametrize("model", ["g0", "g5"])
def test_every_item_scores_as_in_the_reference(model, tasks, bots):
    """All items, nanochat's order: the same tokens, spans, mean losses and verdict as core_eval, item by item."""
    bot, want = bots[model], _expected(model)["settings"]["full"]
    result = evaluate_core(bot, tasks)
    assert result.core == pytest.approx(want["core"], abs=1e-6)
    for task, got in zip(tasks, result.tasks, strict=True):
        expected = want["tasks"][task.label]
        assert got.score.accuracy == pytest.approx(expected["accuracy"], abs=1e-6)
        assert got.score.centered == pytest.approx(expected["centered"], abs=1e-6)
        items = [task.items[line] for line in task_order(task)]
        assert [r.line for r in got.items] == [e["line"] for e in expected["items"]]
        for position, (r, e) in enumerate(zip(got.items, expected["items"], strict=True)):
            tokens, starts, ends = item_spans(task, bot.tokenizer, items, position)
            assert hashlib.sha256(json.dumps(tokens).encode()).hexdigest() == e["tokens_sha256"], (task.label, r.line)
            assert (starts, ends) == (e["starts"], e["ends"])
            _same_item(r, e, task.label)
    longest = max(max(e["lengths"]) for t in want["tasks"].values() for e in t["items"])
    assert longest > 1.5 * bot.config.sequence_len  # prompts run past the context, as nanochat runs them


@pytest.mark.parametrize("model", ["g0", "g5"])
def test_max_per_task_takes_nanochats_subset_and_draws_few_shot_from_it(model, tasks, bots):
    want = _expected(model)["settings"]["subset"]
    result = evaluate_core(bots[model], tasks, max_per_task=want["max_per_task"])
    assert result.core == pytest.approx(want["core"], abs=1e-6)
    for task, got in zip(tasks, result.tasks, strict=True):
        assert len(got.items) == want["max_per_task"]
        for r, e in zip(got.items, want["tasks"][task.label]["items"], strict=True):
            _same_item(r, e, task.label)


def test_cropping_long_prompts_to_the_context_as_core_eval_crops_them(tasks, bots):
    """core_eval keeps the last max_seq_len tokens of a longer prompt (for models that declare one)."""
    want = _expected("g0")["settings"]["crop"]
    for task in (t for t in tasks if "long" in t.label):
        got = evaluate_task(bots["g0"], task, max_seq_len=want["crop"])
        assert got.score.accuracy == pytest.approx(want["tasks"][task.label]["accuracy"], abs=1e-6)
        for r, e in zip(got.items, want["tasks"][task.label]["items"], strict=True):
            _same_item(r, e, task.label)
    full = _expected("g0")["settings"]["full"]["tasks"]
    assert any(full[k]["accuracy"] != want["tasks"][k]["accuracy"] for k in full)  # cropping changed something


def _same_item(got, expected: dict, label: str) -> None:
    assert (got.line, got.correct) == (expected["line"], expected["correct"]), label
    if "mean_losses" in expected:
        for a, b in zip(got.mean_losses, expected["mean_losses"], strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-4), (label, got.line)
    else:
        assert got.matched == expected["matched"], (label, got.line)


def test_language_modelling_items_are_right_for_one_model_and_not_the_other():
    """The greedy items make the LM verdicts depend on the model (random weights never complete random text)."""
    verdicts = {}
    for model in ("g0", "g5"):
        items = _expected(model)["settings"]["full"]["tasks"]["lm_zeroshot"]["items"]
        verdicts[model] = {e["line"]: e["correct"] for e in items}
    assert any(verdicts["g0"].values()) and any(verdicts["g5"].values())
    assert verdicts["g0"] != verdicts["g5"]


def test_an_empty_continuation_is_a_nan_loss_and_decides_as_in_the_reference():
    items = _expected("g0")["settings"]["full"]["tasks"]["mc_zeroshot"]["items"]
    assert sum(any(math.isnan(x) for x in e["mean_losses"]) for e in items) == 2


# --- the bundle's layout ------------------------------------------------------------------------------------------


def _zip(directory: Path, target: Path, top: str) -> Path:
    with zipfile.ZipFile(target, "w") as z:
        for f in sorted(directory.rglob("*")):
            if f.is_file():
                z.write(f, f"{top}{f.relative_to(directory).as_posix()}")
    return target


@pytest.mark.parametrize("top", ["eval_bundle/", ""])
def test_a_zip_reads_as_its_directory(tasks, tmp_path, top):
    assert read_bundle(_zip(BUNDLE, tmp_path / "eval_bundle.zip", top)) == tasks
    shutil.copytree(BUNDLE, tmp_path / "unpacked" / "eval_bundle")
    assert read_bundle(tmp_path / "unpacked") == tasks  # the folder that holds eval_bundle/ works too


def test_bundle_errors_name_the_file(tmp_path):
    bad = shutil.copytree(BUNDLE, tmp_path / "b")
    (bad / "eval_meta_data.csv").write_text("Eval Task,Random baseline\nmc_zeroshot,25\n")
    with pytest.raises(NanochatError, match="no random baseline for task mc_fewshot_long"):
        read_bundle(bad)
    with pytest.raises(NanochatError, match="has no core.yaml"):
        read_bundle(tmp_path)
    with pytest.raises(NanochatError, match="does not exist"):
        read_bundle(tmp_path / "missing.zip")
    shutil.copy(BUNDLE / "eval_meta_data.csv", bad / "eval_meta_data.csv")
    path = bad / "eval_data" / "language_understanding" / "mc_zeroshot.jsonl"
    path.write_text(path.read_text() + '{"query": "q", "gold": 0}\n')
    with pytest.raises(NanochatError, match=r"mc_zeroshot.jsonl:17: a multiple_choice item needs choices"):
        read_bundle(bad)


def test_finding_and_downloading_the_bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "nanochat"))
    with pytest.raises(NanochatError, match="pass --bundle"):
        find_bundle(download=False)
    # offline (nothing listens on port 9): one clear error, nothing half-written in the cache
    monkeypatch.setattr(bundle_module, "EVAL_BUNDLE_URL", "http://127.0.0.1:9/eval_bundle.zip")
    with pytest.raises(NanochatError, match="could not download the CORE eval bundle .* pass --bundle PATH"):
        find_bundle()
    assert not list((tmp_path / "cache").rglob("*.zip"))
    # online (a file URL stands in for the reference's): downloaded once into the cache, then read from there
    source = _zip(BUNDLE, tmp_path / "served.zip", "eval_bundle/")
    monkeypatch.setattr(bundle_module, "EVAL_BUNDLE_URL", source.as_uri())
    cached = find_bundle()
    assert cached == tmp_path / "cache" / "nanochat-py" / "eval_bundle.zip" and len(read_bundle(cached)) == 6
    monkeypatch.setattr(bundle_module, "EVAL_BUNDLE_URL", "http://127.0.0.1:9/gone.zip")
    assert find_bundle() == cached
    # nanochat's own unpacked copy wins
    shutil.copytree(BUNDLE, tmp_path / "nanochat" / "eval_bundle")
    assert find_bundle() == tmp_path / "nanochat" / "eval_bundle"
    with pytest.raises(NanochatError, match="did not give a zip file"):
        fetch_bundle(tmp_path / "other.zip", (BUNDLE / "core.yaml").as_uri())


# --- bits per byte ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["g0", "g5"])
def test_bits_per_byte_is_nanochats(model, bots):
    """nanochat's token_bytes (a token ending mid-character counts U+FFFD's 3 bytes) and evaluate_bpb."""
    want, bot = _expected(model)["bpb"], bots[model]
    lengths = token_bytes(bot.tokenizer)
    assert lengths.tolist() == want["token_bytes"]
    assert int(lengths[bot.tokenizer.bos_token_id]) == 0
    rows = TokenRows(torch.tensor(want["rows"]), torch.tensor(want["mask"]))
    assert bits_per_byte(bot.model, bot.tokenizer, rows, batch_size=3) == pytest.approx(want["bpb"], rel=1e-6)


def test_bpb_text_from_text_jsonl_and_parquet(tmp_path, bots):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["first shard doc", "second doc"], "id": [1, 2]}), tmp_path / "s.parquet")
    (tmp_path / "a.txt").write_text("a text file")
    (tmp_path / "b.jsonl").write_text('{"text": "a jsonl doc"}\n')
    assert list(read_texts([tmp_path])) == ["a text file", "a jsonl doc", "first shard doc", "second doc"]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(NanochatError, match="needs a 'text' column"):
        list(read_texts([tmp_path / "bad.parquet"]))
    tok = bots["g0"].tokenizer
    docs = ["one two three four five six seven eight nine ten " * 4] * 50
    rows = text_rows(tok, iter(docs), seq_len=16, max_rows=3)
    assert rows.rows.shape == (3, 17) and int(rows.rows[0, 0]) == tok.bos_token_id
    assert torch.equal(rows.rows[0, -1], rows.rows[1, 0])  # rows overlap by one token: every target counts once
