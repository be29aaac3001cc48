"""The worker pool under faults: readiness after a warm-up step, a worker that dies or stalls, a row that fails,
hostile sampling values, clients that leave the queue, and the worst request the limits allow.

Each test runs its own in-process server (tests/server_harness.py) with a fault injected into the model or the
sampler; the model is the tiny random-weight G5 fixture.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from server_harness import (
    HI,
    SOURCE,
    STORY,
    TIMEOUT,
    assert_error,
    live_server,
    make_pool,
    stream,
    wait_for,
    wait_ready,
)

from nanochat_py.server import pool as pool_module
from nanochat_py.server import worker as worker_module
from nanochat_py.server.pool import WorkerPool


def patch_forward(monkeypatch, before_call) -> None:
    """Run `before_call(ids)` on the worker's thread before every forward pass of the model the pool loads."""
    real_load = pool_module.load

    def load(*args, **kwargs):
        bot = real_load(*args, **kwargs)
        forward = bot.model.forward

        def patched(ids, *a, **k):
            before_call(ids)
            return forward(ids, *a, **k)

        monkeypatch.setattr(bot.model, "forward", patched)
        return bot

    monkeypatch.setattr(pool_module, "load", load)


def patch_sampler(monkeypatch, before_call) -> None:
    """Run `before_call(temperature, top_k, top_p)` before the worker samples a row's next token."""
    real = worker_module.sample_next

    def sample(logits, generator, temperature, top_k, top_p, *more):
        before_call(temperature, top_k, top_p)
        return real(logits, generator, temperature, top_k, top_p, *more)

    monkeypatch.setattr(worker_module, "sample_next", sample)


@contextmanager
def released_at_exit(event: threading.Event) -> Iterator[None]:
    """Set `event` however the block ends, so a failed test leaves no worker blocked on it."""
    try:
        yield
    finally:
        event.set()


def worker_stats(url: str) -> dict:
    (worker,) = httpx.get(url + "/stats").json()["workers"]
    return worker


# --- readiness and worker health -------------------------------------------------------------------------------
def test_health_is_ready_only_after_the_worker_ran_a_warm_up_step(monkeypatch):
    gate, calls = threading.Event(), []

    def hold_the_first_pass(ids):
        calls.append(tuple(ids.shape))
        assert gate.wait(30)

    patch_forward(monkeypatch, hold_the_first_pass)
    with live_server(make_pool()) as url, released_at_exit(gate):
        assert wait_for(lambda: calls, 20), "the worker ran no warm-up step before any request came"
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json()["ready"] is False, r.text
        gate.set()
        wait_ready(url)
        prefill, decode = calls[:2]
        assert prefill[0] == 1 and decode == (1, 1), calls  # a prefill, then one decode step


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread is meant to die
def test_a_worker_that_dies_turns_health_503_and_fails_its_request(monkeypatch):
    poison = threading.Event()

    def die_when_poisoned(ids):
        if poison.is_set():
            raise SystemExit  # not an Exception: the worker's thread ends

    patch_forward(monkeypatch, die_when_poisoned)
    with live_server(make_pool()) as url:
        wait_ready(url)
        poison.set()
        r = httpx.post(url + "/v1/chat/completions", json={"messages": HI, "max_tokens": 5}, timeout=10)
        assert_error(r, 503)  # the request ends instead of hanging
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["ready"] is False, health.text
        assert "worker 0" in health.json()["error"]
        assert worker_stats(url)["alive"] is False
        assert_error(httpx.post(url + "/v1/chat/completions", json={"messages": HI}), 503)


def test_a_stalled_worker_turns_health_503_until_it_moves_again(monkeypatch):
    stall, stalled, resume = threading.Event(), threading.Event(), threading.Event()

    def block_when_asked(ids):
        if stall.is_set():
            stalled.set()
            assert resume.wait(30)

    patch_forward(monkeypatch, block_when_asked)
    with live_server(make_pool(stall_after=0.3)) as url, released_at_exit(resume):
        wait_ready(url)
        assert worker_stats(url)["stalled"] is False
        stall.set()
        request = threading.Thread(target=httpx.post, args=(url + "/v1/chat/completions",),
                                   kwargs={"json": {"messages": HI, "max_tokens": 3}, "timeout": TIMEOUT})  # fmt: skip
        request.start()
        assert stalled.wait(10)
        assert wait_for(lambda: httpx.get(url + "/health").status_code == 503, 5)
        assert "no progress" in httpx.get(url + "/health").json()["error"]
        stats = worker_stats(url)
        assert stats["alive"] is True and stats["stalled"] is True and stats["heartbeat_age_s"] >= 0.3
        stall.clear()
        resume.set()
        request.join(30)
        assert wait_for(lambda: httpx.get(url + "/health").status_code == 200, 5)


# --- one request cannot hurt another -------------------------------------------------------------------------
# top_k 7 marks the long stream for the sampler patches
LONG = {"messages": STORY, "temperature": 0, "top_k": 7, "max_tokens": 200, "stream": True,
        "stream_options": {"include_usage": True}}  # fmt: skip
FAILING_TEMPERATURE = 1.25  # the sampler patch fails this row on its third token


def test_a_long_stream_keeps_going_while_hostile_neighbours_join_its_batch(monkeypatch):
    seen = {"long": 0, "failing": 0, "most_active": 0}
    pool = make_pool()

    def sampler(temperature, top_k, top_p):
        if top_k == 7:
            seen["long"] += 1
            seen["most_active"] = max(seen["most_active"], pool.workers[0].active)
            if seen["long"] == 1:  # hold the worker until every neighbour waits, so they all join this batch
                assert wait_for(lambda: pool.pending.qsize() >= 3, 20)
        if temperature == FAILING_TEMPERATURE:
            seen["failing"] += 1
            if seen["failing"] == 3:
                raise RuntimeError("an injected failure in one row")

    patch_sampler(monkeypatch, sampler)
    greedy = {"messages": HI, "temperature": 0, "max_tokens": 20}
    neighbours = {
        "tiny temperature": ("/chat/completions", {**greedy, "temperature": 4e-38}),
        "tiny top_p": ("/v1/chat/completions", {**greedy, "temperature": 1, "top_p": 5e-324, "stream": True}),
        "failing row": ("/chat/completions", {**greedy, "temperature": FAILING_TEMPERATURE}),
    }
    results: dict = {}

    def run(name: str, route: str, body: dict) -> None:
        results[name] = stream(url, route, body)

    with live_server(pool) as url:
        wait_ready(url)
        reference = {"native": stream(url, "/chat/completions", greedy)[1],
                     "openai": stream(url, "/v1/chat/completions", {**greedy, "stream": True})[1]}  # fmt: skip
        threads = [threading.Thread(target=run, args=("long", "/v1/chat/completions", LONG))]
        threads[0].start()
        assert wait_for(lambda: seen["long"] >= 1, 20)
        threads += [threading.Thread(target=run, args=(name, *spec)) for name, spec in neighbours.items()]
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(60)
    assert seen["most_active"] >= 3, "the neighbours never shared the long stream's batch"
    status, events = results["long"]
    assert status == 200 and events[-1] == "[DONE]"
    assert not any("error" in e for e in events[:-1]), events
    assert events[-2]["usage"]["completion_tokens"] == 200
    assert [e["choices"][0]["finish_reason"] for e in events[:-2]][-1] == "length"
    # a temperature too small to divide by is greedy; a tiny top_p keeps the top token
    assert results["tiny temperature"] == (200, reference["native"])
    assert _openai_text(results["tiny top_p"][1]) == _openai_text(reference["openai"])
    status, events = results["failing row"]
    assert status == 200 and "error" in events[-2] and events[-1] == {"done": True}, events


def test_a_long_prompt_is_prefilled_in_chunks_between_the_running_streams_steps(monkeypatch):
    monkeypatch.setattr(worker_module, "PREFILL_CHUNK", 16)
    shapes, seen = [], {"long": 0}
    patch_forward(monkeypatch, lambda ids: shapes.append(tuple(ids.shape)))
    patch_sampler(monkeypatch, lambda temperature, top_k, top_p: seen.update(long=seen["long"] + (top_k == 7)))
    question = [{"role": "user", "content": " ".join(f"word{i}" for i in range(40)) + " - what comes next?"}]
    asked = {"messages": question, "temperature": 0, "max_tokens": 8}
    results: dict = {}
    with live_server(make_pool()) as url:
        wait_ready(url)
        alone = stream(url, "/chat/completions", asked)  # an idle worker: the prompt in one pass
        long = threading.Thread(target=lambda: results.update(long=stream(url, "/v1/chat/completions", LONG)))
        long.start()
        assert wait_for(lambda: seen["long"] >= 3, 20)
        shapes.clear()
        joined = stream(url, "/chat/completions", asked)
        long.join(60)
    assert joined == alone, "a prompt prefilled in chunks gets the reply it gets in one pass"
    status, events = results["long"]
    assert status == 200 and events[-2]["usage"]["completion_tokens"] == 200
    prefill = [i for i, (rows, tokens) in enumerate(shapes) if rows == 1 and tokens > 1]
    assert len(prefill) >= 3, shapes  # the ~60-token prompt, 16 tokens at a time
    assert all(shapes[i][1] <= 16 for i in prefill), shapes
    # between two chunks of the prompt, the running stream took its decode step
    between = [shapes[a + 1 : b] for a, b in zip(prefill, prefill[1:], strict=False)]
    assert all(any(tokens == 1 for _, tokens in steps) for steps in between), shapes


def _openai_text(events: list) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if isinstance(e, dict))


def test_an_openai_stream_that_fails_sends_the_error_and_no_finish_reason(monkeypatch):
    def sampler(temperature, top_k, top_p):
        if temperature == FAILING_TEMPERATURE:
            raise RuntimeError("an injected failure in one row")

    patch_sampler(monkeypatch, sampler)
    with live_server(make_pool()) as url:
        wait_ready(url)
        body = {"messages": HI, "temperature": FAILING_TEMPERATURE, "max_tokens": 5}
        status, events = stream(url, "/v1/chat/completions", {**body, "stream": True})
        assert status == 200 and events[-1] == "[DONE]"
        assert any("error" in e for e in events[:-1]), events
        assert not any(e["choices"][0]["finish_reason"] for e in events[:-1] if "choices" in e), events
        assert_error(httpx.post(url + "/v1/chat/completions", json=body, timeout=TIMEOUT), 500)


def test_a_request_in_flight_at_shutdown_gets_503(monkeypatch):
    holding, release = threading.Event(), threading.Event()

    def sampler(temperature, top_k, top_p):
        if top_k == 7:
            holding.set()
            assert release.wait(30)

    patch_sampler(monkeypatch, sampler)
    pool = make_pool()
    with live_server(pool) as url, released_at_exit(release):
        wait_ready(url)
        result = {}
        body = {"messages": STORY, "temperature": 0, "top_k": 7, "max_tokens": 100}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(url + "/v1/chat/completions", json=body,
                                                                         timeout=TIMEOUT)))  # fmt: skip
        t.start()
        assert holding.wait(20)
        pool.shutdown(wait=False)
        release.set()
        t.join(30)
        assert_error(result["r"], 503)


def test_a_queued_client_that_leaves_frees_its_place_at_once(monkeypatch):
    holding, release = threading.Event(), threading.Event()

    def sampler(temperature, top_k, top_p):
        if top_k == 7:  # the request in the one row holds it until released
            holding.set()
            assert release.wait(30)

    patch_sampler(monkeypatch, sampler)
    with live_server(make_pool(max_batch=1, max_queue=1)) as url, released_at_exit(release):
        wait_ready(url)
        busy_body = {"messages": HI, "temperature": 0, "top_k": 7, "max_tokens": 2}
        busy = threading.Thread(target=httpx.post, args=(url + "/v1/chat/completions",),
                                kwargs={"json": busy_body, "timeout": TIMEOUT})  # fmt: skip
        busy.start()
        assert holding.wait(20)
        with httpx.Client(timeout=TIMEOUT) as c:
            with c.stream("POST", url + "/chat/completions", json={"messages": HI, "max_tokens": 2}) as r:
                assert r.status_code == 200
                assert wait_for(lambda: httpx.get(url + "/stats").json()["queue_length"] == 1)
            # the client closed its connection while queued
        assert wait_for(lambda: httpx.get(url + "/stats").json()["queue_length"] == 0, 5), "the place stays taken"
        results = {}
        newcomer = threading.Thread(
            target=lambda: results.update(r=stream(url, "/chat/completions", {"messages": HI, "max_tokens": 2}))
        )
        newcomer.start()
        assert wait_for(lambda: httpx.get(url + "/stats").json()["queue_length"] == 1 or "r" in results)
        release.set()
        newcomer.join(30)
        busy.join(30)
        status, events = results["r"]
        assert status == 200 and events[-1] == {"done": True}, events


# --- the worst request the limits allow ----------------------------------------------------------------------
def test_health_answers_fast_while_the_worst_allowed_request_runs():
    """500 messages (32,000 characters), n=8, four 256-character stop strings that keep matching, streamed."""
    messages = [{"role": ("user", "assistant")[i % 2], "content": "a" * 64} for i in range(499)]
    stops = [" " * 255 + "x", "e" * 255 + "y", "a" * 255 + "z", " e" * 128]
    body = {"messages": messages, "n": 8, "stop": stops, "temperature": 1, "max_tokens": 4096, "stream": True}
    with live_server(make_pool()) as url:
        wait_ready(url)
        done, slowest = threading.Event(), 0.0

        def worst() -> None:
            try:
                status, events = stream(url, "/v1/chat/completions", body)
                assert status == 200 and events[-1] == "[DONE]", events
            finally:
                done.set()

        t = threading.Thread(target=worst)
        t.start()
        with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
            while not done.is_set():
                started = time.monotonic()
                assert c.get("/health").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.01)  # leave the worker the CPU between probes
        t.join()
    assert slowest < 0.5, f"/health took {slowest:.3f} s while the request ran"


def test_a_context_too_big_for_memory_is_refused_before_allocating(tmp_path):
    # a valid meta whose context (10^9 positions) gives a per-row KV cache far beyond this machine's memory:
    # the pool reports it in one clear error instead of allocating (or swapping, or the OOM killer)
    model = tmp_path / "model"
    shutil.copytree(Path(SOURCE), model)
    meta = next(model.glob("meta_*.json"))
    data = json.loads(meta.read_text())
    data["model_config"]["sequence_len"] = 10**9
    meta.write_text(json.dumps(data))
    pool = WorkerPool(str(model), device="cpu", max_batch=16)
    started = time.monotonic()
    pool.start(background=False)
    assert time.monotonic() - started < 20
    assert not pool.ready
    assert "KV cache" in pool.error and "--max-batch" in pool.error and len(pool.error) < 400, pool.error
