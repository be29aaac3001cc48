"""lm-evaluation-harness against the server: its `local-completions` model on the two tasks in tests/fixtures/lm_eval/
(local data, YAML), a multiple-choice (log-likelihood) task and a generation task, run by run_harness.py there,
with the harness's requests as token ids (its default) and as text.

The harness finds the server's tokenizer routes and tokenizes through them (nothing is downloaded: the Hub is
offline). Every log-likelihood it received must equal the model's own, computed here directly with bot.model in
float32, within 1e-4, with the same is-greedy flags; every generated answer must be the library's greedy reply
cut at the task's stop string; and the scores it reports must follow from those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from server_harness import ROOT, SOURCE, live_server, make_pool, wait_ready

import nanochat_py as nc

TASKS = ROOT / "tests/fixtures/lm_eval"
TOLERANCE = 1e-4
PADDED = 64  # longer than any context and continuation of the tasks


@pytest.fixture(scope="module")
def bot() -> nc.Chatbot:
    return nc.load(SOURCE, device="cpu")


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> dict:
    """Run the harness once against a live server (in a process of its own, as a user would); its results and
    per-sample records, by task."""
    out = tmp_path_factory.mktemp("lm_eval")
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HOME": str(out / "hf"), "HF_DATASETS_CACHE": str(out / "datasets")}  # fmt: skip
    with live_server(make_pool()) as url:
        wait_ready(url)
        command = [sys.executable, str(TASKS / "run_harness.py"), url, str(out / "run.json"), "256"]
        run = subprocess.run(command, cwd=ROOT, env={**os.environ, **offline}, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads((out / "run.json").read_text())


@pytest.fixture(params=["token_ids", "text"])
def mode(request, harness) -> tuple[str, dict]:
    """How the harness sent its requests (token ids read as they are, or text read after <|bos|>) and what it got."""
    found = harness[request.param]
    assert found["tokenizer_backend"] == "remote"  # it found the tokenizer routes and tokenized through them
    return request.param, {"results": found["results"], **found["samples"]}


def read_as(bot: nc.Chatbot, mode: str, text: str) -> list[int]:
    """The ids the model reads for text the harness tokenized: as they are, or after <|bos|> when sent as text."""
    return ([] if mode == "token_ids" else [bot.tokenizer.bos_token_id]) + bot.tokenizer.encode(text)


def direct_loglikelihood(bot: nc.Chatbot, mode: str, context: str, continuation: str) -> tuple[float, bool]:
    """The continuation's log-likelihood after the context, tokenized as the harness does (the whole text, split
    where the context alone ends; the context's trailing spaces go with the continuation)."""
    whole = read_as(bot, mode, context + continuation)
    start = len(read_as(bot, mode, context.rstrip()))
    padded = whole + [0] * (PADDED - len(whole))  # one shape for every pair; a causal model ignores what follows
    with torch.inference_mode():
        lp = torch.log_softmax(bot.model(torch.tensor([padded]))[0].float(), dim=-1)
    positions = range(start, len(whole))
    total = sum(float(lp[t - 1, whole[t]]) for t in positions)
    return total, all(int(lp[t - 1].argmax()) == whole[t] for t in positions)


def test_the_loglikelihoods_the_harness_receives_are_the_models(mode, bot):
    mode, harness = mode
    samples, correct = harness["nanochat_tiny_choice"], []
    assert len(samples) == 5
    for sample in samples:
        scores = []
        for i, response in enumerate(sample["resps"]):
            context, continuation = sample["arguments"][i]
            expected, greedy = direct_loglikelihood(bot, mode, context, continuation)
            (got, got_greedy), = response  # fmt: skip
            assert abs(got - expected) < TOLERANCE, (context, continuation, got, expected)
            assert got_greedy == greedy
            scores.append(expected)
        assert len(scores) == len(sample["doc"]["choices"])
        correct.append(scores.index(max(scores)) == sample["doc"]["answer"])
    assert harness["results"]["nanochat_tiny_choice"]["acc,none"] == pytest.approx(sum(correct) / len(correct))


def test_the_answers_the_harness_receives_are_the_librarys_greedy_replies(mode, bot):
    mode, harness = mode
    samples, matches = harness["nanochat_tiny_answer"], []
    assert len(samples) == 4
    for sample in samples:
        ((context, settings),) = sample["arguments"]
        assert settings["until"] == ["\n"] and settings["max_gen_toks"] == 12
        reply = bot.generate(read_as(bot, mode, context), max_tokens=12, temperature=0, use_tools=False)
        expected = bot.tokenizer.decode(reply).split("\n")[0]
        assert sample["resps"] == [[expected]]
        matches.append(expected == sample["target"])
    assert harness["results"]["nanochat_tiny_answer"]["exact_match,none"] == pytest.approx(sum(matches) / len(matches))


def test_the_task_files_read_local_data_from_the_repository_root():
    for task in ("nanochat_tiny_choice", "nanochat_tiny_answer"):
        text = (TASKS / f"{task}.yaml").read_text()
        data = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("test:"))
        assert (ROOT / data).is_file() and Path(data).parent == Path("tests/fixtures/lm_eval")
