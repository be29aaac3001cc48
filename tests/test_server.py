"""`nanochat-py serve` end to end: a real uvicorn process on loopback, driven by curl, httpx and the openai client.

The model is the random-weight G5 parity fixture (256-token context): its replies are nonsense, but at
temperature 0 they are repeatable, so the server can be checked token for token against the library.
One server serves most tests; the flags that change behaviour (--api-key, --max-batch 1 --max-queue 1,
--log-messages) and SIGTERM each get a server of their own. A bug found later gets a strict xfail with
its reason until it is fixed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families
from server_harness import sse_events

import nanochat_py as nc
from nanochat_py.chatbot import Piece, ReadableText

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "tests/fixtures/parity/g_92d63d4/model"
HI = [{"role": "user", "content": "hi"}]
TIMEOUT = httpx.Timeout(60.0)


# --- a server process ---------------------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log_dir: Path, *flags: str) -> Server:
    """Start `nanochat-py serve` and wait until /health says ready; every /health answer on the way is checked."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "nanochat_py.cli", "serve", "--source", SOURCE, "--host", "127.0.0.1",
           "--port", str(port), *flags]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{server.log}")
        try:
            r = httpx.get(server.url + "/health", timeout=2)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if r.status_code == 200:
            assert r.json()["ready"] is True and r.json()["status"] == "ok"
            return server
        assert r.status_code == 503 and r.json()["ready"] is False, r.text  # still loading
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"the server was not ready within 60 s:\n{server.log}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("serve"))
    yield s
    assert s.stop() == 0, s.log


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def openai_client(server):
    return OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def bot():
    return nc.load(SOURCE, device="cpu")


# --- reading the native SSE stream --------------------------------------------------------------------------


def native_text(events: list[dict]) -> str:
    """The reply as `bot.chat` gives it: pieces joined, calculator calls set off as `[calculator: ...]`."""
    text = ReadableText()
    out = [text.add(Piece(e["kind"], e["token"])) for e in events if "token" in e]
    return "".join(out) + text.close()


def native_chat(client: httpx.Client, messages, **params) -> list[dict]:
    with client.stream("POST", "/chat/completions", json={"messages": messages, **params}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return sse_events(r.iter_lines())


def assert_native_stream(events: list[dict]) -> None:
    """Token events `{"token", "kind", "worker"}` and then exactly one final `{"done": true}`."""
    assert events and events[-1] == {"done": True}
    for e in events[:-1]:
        assert set(e) == {"token", "kind", "worker"}, e
        assert isinstance(e["token"], str) and e["kind"] in ("text", "python", "python_output")
        assert isinstance(e["worker"], int) and e["worker"] >= 0


def worker_stats(client: httpx.Client) -> dict:
    (worker,) = client.get("/stats").json()["workers"]
    return worker


# --- the README's example and agreement with the library ----------------------------------------------------
def test_readme_curl_example_streams_tokens_then_done(server):
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")  # join continued lines
    (example,) = re.findall(r"^curl .*/chat/completions.*$", readme, re.M)
    command = shlex.split(re.sub(r"http://[^/]+/", f"{server.url}/", example))
    if shutil.which("curl"):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        body = result.stdout
    else:  # the same request through httpx
        data = json.loads(command[command.index("-d") + 1])
        body = httpx.post(f"{server.url}/chat/completions", json=data, timeout=TIMEOUT).text
    events = sse_events(body.splitlines())
    assert_native_stream(events)
    assert len(events) > 1


@pytest.mark.parametrize(
    "messages",
    [
        HI,
        [{"role": "user", "content": "Why is the sky blue?"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
        ],
    ],
    ids=["hi", "sky", "system-and-history"],
)
def test_native_stream_matches_the_library(client, bot, messages):
    events = native_chat(client, messages, temperature=0, max_tokens=40)
    assert_native_stream(events)
    assert native_text(events) == bot.chat(messages, temperature=0, max_tokens=40)


def test_openai_reply_matches_the_library(openai_client, bot):
    messages = [{"role": "user", "content": "Tell me a story"}]
    r = openai_client.chat.completions.create(model="nanochat", messages=messages, temperature=0, max_tokens=40)
    assert r.choices[0].message.content == bot.chat(messages, temperature=0, max_tokens=40)


def test_seeded_sampling_matches_the_library(client, bot):
    events = native_chat(client, HI, temperature=1, top_k=50, seed=7, max_tokens=30)
    assert native_text(events) == bot.chat(HI, temperature=1, top_k=50, seed=7, max_tokens=30)


def test_a_long_message_is_cut_to_the_context_not_refused(client):
    events = native_chat(client, [{"role": "user", "content": "word " * 1600}], temperature=0, max_tokens=5)
    assert_native_stream(events)


def test_a_history_with_calculator_parts_is_accepted(client):
    """The web UI sends earlier assistant turns back as parts, tool calls included."""
    assistant = [{"type": "text", "text": "sure "}, {"type": "python", "text": "12*7"},
                 {"type": "python_output", "text": "84"}, {"type": "text", "text": " so 84"}]  # fmt: skip
    messages = [{"role": "user", "content": "12*7?"}, {"role": "assistant", "content": assistant},
                {"role": "user", "content": [{"type": "text", "text": "thanks"}]}]  # fmt: skip
    assert_native_stream(native_chat(client, messages, temperature=0, max_tokens=5))


# --- validation ---------------------------------------------------------------------------------------------
def _alternating(n: int, content: str = "hi") -> list[dict]:
    return [{"role": ("user", "assistant")[i % 2], "content": content} for i in range(n)]


INVALID = {
    "no messages": {"messages": []},
    "501 messages": {"messages": _alternating(501)},
    "empty message": {"messages": [{"role": "user", "content": ""}]},
    "message of 8001 chars": {"messages": [{"role": "user", "content": "a" * 8001}]},
    "over 32000 chars in total": {"messages": _alternating(5, "a" * 7000)},
    "bad role": {"messages": [{"role": "tool", "content": "hi"}]},
    "user, user": {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    "assistant first": {"messages": [{"role": "assistant", "content": "a"}]},
    "system not first": {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
    "only a system message": {"messages": [{"role": "system", "content": "a"}]},
    "a python part in a user message": {"messages": [{"role": "user", "content": [{"type": "python", "text": "1"}]}]},
    "temperature -0.1": {"messages": HI, "temperature": -0.1},
    "temperature 2.1": {"messages": HI, "temperature": 2.1},
    "top_k -1": {"messages": HI, "top_k": -1},
    "top_k 201": {"messages": HI, "top_k": 201},
    "top_p 0": {"messages": HI, "top_p": 0},
    "top_p 1.1": {"messages": HI, "top_p": 1.1},
    "max_tokens 0": {"messages": HI, "max_tokens": 0},
    "max_tokens 4097": {"messages": HI, "max_tokens": 4097},
    "seed -1": {"messages": HI, "seed": -1},
    "messages as a string": {"messages": "hi"},
    "temperature as a string": {"messages": HI, "temperature": "hot"},
    "content as a number": {"messages": [{"role": "user", "content": 5}]},
    "missing messages": {"temperature": 0},
    "body is a list": [HI],
    "body is null": None,
}
INVALID_OPENAI = {
    "max_completion_tokens 0": {"messages": HI, "max_completion_tokens": 0},
    "n 0": {"messages": HI, "n": 0},
    "n 9": {"messages": HI, "n": 9},
    "5 stop strings": {"messages": HI, "stop": ["a", "b", "c", "d", "e"]},
    "empty stop string": {"messages": HI, "stop": ""},
    "a 257-character stop string": {"messages": HI, "stop": "a" * 257},
    "four 240,000-character stop strings": {"messages": HI, "stop": ["a" * 240_000] * 4},
}
ROUTES = ["/chat/completions", "/v1/chat/completions"]


def assert_error(r: httpx.Response, status: int, type_: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param"}
    assert isinstance(error["message"], str) and error["message"]
    if type_:
        assert error["type"] == type_
    return error


def assert_still_serving(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["ready"] is True


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_invalid_request_is_a_400_json_error(client, route, body):
    assert_error(client.post(route, json=body), 400, "invalid_request_error")
    assert_still_serving(client)


@pytest.mark.parametrize("body", INVALID_OPENAI.values(), ids=INVALID_OPENAI.keys())
def test_invalid_openai_request_is_a_400_json_error(client, body):
    assert_error(client.post("/v1/chat/completions", json=body), 400, "invalid_request_error")
    assert_still_serving(client)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("content", [b'{"messages": [', b"hello", b""], ids=["truncated", "not json", "empty"])
def test_malformed_json_is_a_400_json_error(client, route, content):
    assert_error(client.post(route, content=content, headers={"content-type": "application/json"}), 400)
    assert_still_serving(client)


def test_malformed_json_error_names_no_parameter(client):
    """Malformed JSON names no parameter (pydantic's loc holds a character offset, not a field)."""

    r = client.post("/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    error = assert_error(r, 400)
    assert error["param"] is None and not error["message"].startswith("14")


def test_field_errors_name_the_parameter(client):
    error = assert_error(client.post("/v1/chat/completions", json={"messages": HI, "top_p": 0}), 400)
    assert error["param"] == "top_p" and "top_p" in error["message"]


@pytest.mark.parametrize("route", ROUTES)
def test_body_over_1mb_is_a_413_json_error(client, route):
    body = json.dumps({"messages": [{"role": "user", "content": "a" * 1_100_000}]})
    assert_error(client.post(route, content=body, headers={"content-type": "application/json"}), 413)
    assert_still_serving(client)


def test_chunked_body_over_1mb_is_a_413(client):
    """A chunked body (no Content-Length) over 1 MB is a 413 too, not FastAPI's 400 'error parsing the body'."""

    def chunks():
        for _ in range(12):
            yield b"x" * 100_000

    r = client.post("/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413)


def test_unknown_route_and_wrong_method_are_json_errors(client):
    assert_error(client.get("/no/such/route"), 404)
    assert_error(client.get("/chat/completions"), 405)


# --- the OpenAI API through the official client --------------------------------------------------------------
STORY = [{"role": "user", "content": "Tell me a story"}]


def test_openai_non_streaming(openai_client):
    r = openai_client.chat.completions.create(model="nanochat", messages=STORY, temperature=0, max_tokens=12)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    (choice,) = r.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    if choice.finish_reason == "length":
        assert u.completion_tokens == 12


def test_openai_streaming_with_usage(openai_client):
    chunks = list(
        openai_client.chat.completions.create(
            model="nanochat", messages=STORY, temperature=0, max_tokens=12, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    *with_choices, usage_chunk = chunks
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert with_choices[0].choices[0].delta.role == "assistant"
    reasons = [c.choices[0].finish_reason for c in with_choices]
    assert reasons[-1] in ("stop", "length") and not any(reasons[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    u = usage_chunk.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # the same request without streaming gives the same text
    r = openai_client.chat.completions.create(model="nanochat", messages=STORY, temperature=0, max_tokens=12)
    assert text == r.choices[0].message.content
    assert u == r.usage


def test_openai_streaming_without_usage_has_no_usage_chunk(openai_client):
    chunks = list(
        openai_client.chat.completions.create(
            model="nanochat", messages=STORY, temperature=0, max_tokens=5, stream=True
        )
    )
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_max_completion_tokens_is_honoured(openai_client):
    r = openai_client.chat.completions.create(model="nanochat", messages=STORY, temperature=0, max_completion_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_n_gives_n_choices(openai_client):
    r = openai_client.chat.completions.create(model="nanochat", messages=STORY, temperature=1, max_tokens=8, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    assert 0 < r.usage.completion_tokens <= 2 * 8


def test_seed_makes_sampling_repeatable(openai_client):
    def sample(seed: int) -> str:
        r = openai_client.chat.completions.create(
            model="nanochat", messages=STORY, temperature=1, max_tokens=20, seed=seed
        )
        return r.choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(seed) != first for seed in (1, 2, 3))


@pytest.fixture(scope="module")
def greedy_story(openai_client) -> str:
    r = openai_client.chat.completions.create(model="nanochat", messages=STORY, temperature=0, max_tokens=40)
    text = r.choices[0].message.content
    assert len(text) >= 20
    return text


def _stop_string(text: str) -> tuple[str, str]:
    """A stop string from the middle of `text`, and the text before its first occurrence."""
    middle = len(text) // 2
    stop = text[middle : middle + 3]
    return stop, text[: text.index(stop)]


def test_stop_cuts_the_text_before_the_stop_string(openai_client, greedy_story):
    stop, before = _stop_string(greedy_story)
    r = openai_client.chat.completions.create(
        model="nanochat", messages=STORY, temperature=0, max_tokens=40, stop=["never-appears", stop]
    )
    assert r.choices[0].message.content == before
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 40


def test_stop_in_a_stream(openai_client, greedy_story):
    stop, before = _stop_string(greedy_story)
    chunks = list(
        openai_client.chat.completions.create(
            model="nanochat", messages=STORY, temperature=0, max_tokens=40, stop=stop, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == before
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_usage_is_the_same_streaming_or_not(openai_client, greedy_story):
    """The token that completes a stop string counts in usage, streaming or not."""

    stop, _ = _stop_string(greedy_story)
    params = dict(model="nanochat", messages=STORY, temperature=0, max_tokens=40, stop=stop)
    plain = openai_client.chat.completions.create(**params)
    chunks = list(openai_client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage == plain.usage


def test_models_lists_the_model(openai_client):
    models = openai_client.models.list()
    assert len(models.data) == 1
    assert models.data[0].id and models.data[0].object == "model"


# --- continuous batching ------------------------------------------------------------------------------------
PROMPTS = [
    "hi", "Why is the sky blue?", "Tell me a story", "What is 2+2?", "Name a color", "Write a haiku",
    "Who are you?", "Count to ten", "What is the capital of France?", "Say something nice", "Explain gravity",
    "Give me a recipe", "What time is it?", "Translate hello", "Recommend a book", "Goodbye!",
]  # fmt: skip


def _greedy(i: int) -> dict:
    return dict(temperature=0, max_tokens=48)


def _seeded(i: int) -> dict:  # rows sampled together in groups of the same settings, and one row alone
    settings = [dict(top_k=50), dict(top_p=0.9), dict(top_k=50, temperature=0.7)][i % 3] if i else dict(top_k=5)
    return {"temperature": 1, "seed": i, "max_tokens": 32, **settings}


@pytest.mark.parametrize("params_of", [_greedy, _seeded], ids=["greedy", "seeded-sampling"])
def test_16_concurrent_streams_are_batched_and_each_matches_its_answer_alone(client, server, params_of):
    assert len(set(PROMPTS)) == 16
    chat = [dict(messages=[{"role": "user", "content": p}], **params_of(i)) for i, p in enumerate(PROMPTS)]
    alone = [native_text(native_chat(client, **c)) for c in chat]

    results: list[str | None] = [None] * len(PROMPTS)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(PROMPTS))

    def one(i: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
                barrier.wait()
                results[i] = native_text(native_chat(c, **chat[i]))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    most_active = 0
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as poller:
        while any(t.is_alive() for t in threads):
            most_active = max(most_active, worker_stats(poller)["active_requests"])
            time.sleep(0.002)
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == alone
    assert most_active >= 4, f"at most {most_active} requests were ever decoded together"


# --- a client that goes away --------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ROUTES)
def test_a_disconnected_client_frees_its_row(client, server, route):
    body = {"messages": STORY, "temperature": 0, "max_tokens": 200}
    full = client.post("/v1/chat/completions", json=body).json()
    assert full["usage"]["completion_tokens"] == 200  # left alone, this reply runs to max_tokens
    before = worker_stats(client)["tokens_served"]
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as slow:
        with slow.stream("POST", route, json={**body, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            events = 0
            while events < 2:
                events += next(lines).startswith("data: ")
    # the response is closed: the row must be freed and generation must stop
    deadline = time.monotonic() + 3
    while (stats := worker_stats(client))["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats["active_requests"] == 0
    served = stats["tokens_served"]
    time.sleep(0.5)
    assert worker_stats(client)["tokens_served"] == served
    assert served - before < 200, "the reply ran to the end although its client was gone"
    assert_still_serving(client)


def test_a_disconnected_non_streaming_client_frees_its_row(client, server):
    body = json.dumps({"messages": STORY, "temperature": 0, "max_tokens": 200}).encode()
    before = worker_stats(client)["tokens_served"]
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 5
        while worker_stats(client)["active_requests"] == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
    time.sleep(1)  # the socket is closed; a full reply would be 200 tokens (see the test above)
    assert worker_stats(client)["tokens_served"] - before < 200


def test_a_huge_seed_is_refused_or_served_without_hurting_others(client, server):
    """A seed torch cannot take must neither hang its request nor fail the others in the batch."""

    innocent: list = []

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            innocent.extend(native_chat(c, STORY, temperature=0, max_tokens=200))

    t = threading.Thread(target=stream)
    t.start()
    while worker_stats(client)["active_requests"] == 0 and t.is_alive():
        time.sleep(0.002)
    try:
        with httpx.Client(base_url=server.url, timeout=3) as c:
            r = c.post("/chat/completions", json={"messages": HI, "seed": 2**64, "max_tokens": 5})
    finally:
        t.join()
    assert r.status_code in (200, 400), r.text
    assert not any("error" in e for e in innocent), innocent[-3:]


# --- metrics ------------------------------------------------------------------------------------------------
def metric_values(client: httpx.Client) -> dict[str, float]:
    """Every sample of /metrics by name and labels, e.g. 'nanochat_requests_total{code=200,route=/health}'."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            values[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return values


def test_metrics_are_prometheus_text_and_count_requests(client, openai_client):
    r = client.get("/metrics")
    families = {f.name: f.type for f in text_string_to_metric_families(r.text)}
    assert families["nanochat_requests"] == "counter"
    assert families["nanochat_errors"] == "counter"
    assert families["nanochat_prompt_tokens"] == "counter"
    assert families["nanochat_completion_tokens"] == "counter"
    assert families["nanochat_time_to_first_token_seconds"] == "histogram"
    assert families["nanochat_decode_tokens_per_second"] == "histogram"
    assert families["nanochat_queue_depth"] == "gauge"
    assert families["nanochat_active_requests"] == "gauge"

    ok = "nanochat_requests_total{code=200,route=/v1/chat/completions}"
    bad = "nanochat_requests_total{code=400,route=/v1/chat/completions}"
    before = metric_values(client)
    reply = openai_client.chat.completions.create(model="nanochat", messages=STORY, temperature=0, max_tokens=6)
    client.post("/v1/chat/completions", json={"messages": []})
    after = metric_values(client)
    assert after[ok] == before.get(ok, 0) + 1
    assert after[bad] == before.get(bad, 0) + 1
    assert after["nanochat_errors_total{code=400}"] == before.get("nanochat_errors_total{code=400}", 0) + 1
    assert after["nanochat_prompt_tokens_total"] - before["nanochat_prompt_tokens_total"] == reply.usage.prompt_tokens
    completion = after["nanochat_completion_tokens_total"] - before["nanochat_completion_tokens_total"]
    assert completion == reply.usage.completion_tokens
    ttft = "nanochat_time_to_first_token_seconds_count"
    assert after[ttft] == before[ttft] + 1
    assert after["nanochat_queue_depth"] == 0 and after["nanochat_active_requests"] == 0


def test_metrics_count_replies_cut_by_a_stop_string(client, openai_client, greedy_story):
    """Replies cut by a stop string count in the token metrics like any other."""

    stop, _ = _stop_string(greedy_story)
    before = metric_values(client)
    reply = openai_client.chat.completions.create(
        model="nanochat", messages=STORY, temperature=0, max_tokens=40, stop=stop
    )
    after = metric_values(client)
    completion = after["nanochat_completion_tokens_total"] - before["nanochat_completion_tokens_total"]
    assert completion == reply.usage.completion_tokens > 0


# --- prompts and replies stay out of the logs ----------------------------------------------------------------
def test_prompts_and_replies_are_not_logged_by_default(server, openai_client):
    prompt = "zebra umbrella 4711 secret prompt"
    r = openai_client.chat.completions.create(
        model="nanochat", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=30
    )
    reply = r.choices[0].message.content
    assert len(reply) >= 10
    time.sleep(0.2)
    log = server.log
    assert "ready" in log  # the log file is the right one
    assert prompt not in log and reply not in log


def test_log_messages_logs_the_prompt(tmp_path):
    s = start_server(tmp_path, "--log-messages")
    try:
        prompt = "zebra umbrella 4711 logged prompt"
        r = httpx.post(
            f"{s.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 30},
            timeout=TIMEOUT,
        )
        reply = r.json()["choices"][0]["message"]["content"]
    finally:
        assert s.stop() == 0
    assert prompt in s.log and reply in s.log


# --- servers with other flags -------------------------------------------------------------------------------
def test_api_key_guards_the_api_routes(tmp_path):
    s = start_server(tmp_path, "--api-key", "secret")
    try:
        with httpx.Client(base_url=s.url, timeout=TIMEOUT) as c:
            body = {"messages": HI, "max_tokens": 2}
            calls = [("POST", "/chat/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
            for method, path in calls:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
                    r = c.request(method, path, json=body if method == "POST" else None, headers=headers)
                    assert_error(r, 401, "authentication_error")
                r = c.request(method, path, json=body if method == "POST" else None,
                              headers={"Authorization": "Bearer secret"})  # fmt: skip
                assert r.status_code == 200, r.text
            assert c.get("/health").status_code == 200
        openai = OpenAI(base_url=f"{s.url}/v1", api_key="secret", max_retries=0)
        assert openai.chat.completions.create(model="nanochat", messages=HI, max_tokens=2).choices
    finally:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory):
    """One row and one waiting place: the third request at once is refused."""
    s = start_server(tmp_path_factory.mktemp("queue"), "--max-batch", "1", "--max-queue", "1")
    yield s
    assert s.stop() == 0, s.log


def test_a_full_queue_gets_503_with_retry_after(queue_server):
    n = 6
    responses: list = [None] * n  # (status, headers, SSE events or JSON error) per request
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        with httpx.Client(base_url=queue_server.url, timeout=TIMEOUT) as c:
            barrier.wait()
            with c.stream("POST", "/chat/completions", json={"messages": STORY, "max_tokens": 4096}) as r:
                body = sse_events(r.iter_lines()) if r.status_code == 200 else json.loads(r.read())
                responses[i] = (r.status_code, dict(r.headers), body)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    codes = sorted(code for code, _, _ in responses)
    assert 503 in codes and 200 in codes, codes
    assert set(codes) == {200, 503}
    for code, headers, body in responses:
        if code == 503:
            assert int(headers["retry-after"]) > 0
            assert headers["content-type"].startswith("application/json")
            assert body["error"]["type"] == "server_error" and body["error"]["message"]
        else:
            assert_native_stream(body)
    with httpx.Client(base_url=queue_server.url, timeout=TIMEOUT) as c:
        assert_still_serving(c)
        assert c.get("/stats").json()["queue_length"] == 0


def test_a_refused_request_leaves_no_work_behind(queue_server):
    """An n=2 request refused because the queue filled midway leaves no job behind."""

    with httpx.Client(base_url=queue_server.url, timeout=TIMEOUT) as c:
        before = worker_stats(c)["tokens_served"]
        busy = threading.Thread(
            target=c.post,
            args=("/v1/chat/completions",),
            kwargs={"json": {"messages": STORY, "temperature": 0, "max_tokens": 200}},
        )
        busy.start()  # fills the one row (its greedy reply runs to 200 tokens)
        while worker_stats(c)["active_requests"] == 0 and busy.is_alive():
            time.sleep(0.002)
        r = c.post("/v1/chat/completions", json={"messages": HI, "temperature": 0, "max_tokens": 30, "n": 2})
        assert_error(r, 503, "server_error")
        busy.join()
        time.sleep(0.5)
        assert worker_stats(c)["tokens_served"] - before == 200


def test_a_source_that_cannot_load_exits_2_with_one_error_line(tmp_path):
    cmd = [sys.executable, "-m", "nanochat_py.cli", "serve", "--source", "/no/such/dir", "--port", str(free_port())]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nanochat-py: error: source /no/such/dir does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_ends_streams_cleanly_and_exits_0(tmp_path):
    s = start_server(tmp_path, "--max-batch", "1")
    # one worker row and several long requests: some are mid-stream, the rest wait in the queue
    n = 6
    outcomes: list = [None] * n
    first_token = threading.Event()
    opened = threading.Semaphore(0)  # released once per stream whose response has begun

    def one(i: int) -> None:
        route = ROUTES[i % 2]
        body = {"messages": STORY, "max_tokens": 4096, "stream": True}
        try:
            with httpx.Client(base_url=s.url, timeout=TIMEOUT) as c, c.stream("POST", route, json=body) as r:
                opened.release()
                events = []
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        first_token.set()
                    events.extend(sse_events([line]))
                outcomes[i] = (route, r.status_code, events)
        except Exception as e:
            outcomes[i] = (route, None, e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for _ in range(n):
        assert opened.acquire(timeout=30)
    assert first_token.wait(30)
    s.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = s.proc.wait(timeout=10)
    finally:
        s.stop()
    assert code == 0, s.log
    assert time.monotonic() - started < 10
    for t in threads:
        t.join(timeout=10)
    assert "Traceback" not in s.log, s.log
    for route, status, events in outcomes:
        assert status == 200, events
        if route == "/chat/completions":
            assert events[-1] == {"done": True}
        else:
            assert events[-1] == "[DONE]"
    # at least one stream really was cut short by the shutdown, with the reason sent to its client
    assert any(any("error" in e for e in events if isinstance(e, dict)) for _, _, events in outcomes)
