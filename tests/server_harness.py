"""An in-process server for tests that reach inside it: a real uvicorn on loopback, in a thread, in front of a
WorkerPool the test built (and may have patched to inject a fault)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from nanochat_py.server.app import Settings, create_app
from nanochat_py.server.pool import WorkerPool

ROOT = Path(__file__).resolve().parent.parent
SOURCE = str(ROOT / "tests/fixtures/parity/g_92d63d4/model")  # the random-weight G5 fixture, 256-token context
HI = [{"role": "user", "content": "hi"}]
STORY = [{"role": "user", "content": "Tell me a story"}]  # greedy, its reply runs to 200 tokens and more
TIMEOUT = httpx.Timeout(30.0)


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll `condition` (state on another thread or process) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return bool(condition())


def make_pool(**options) -> WorkerPool:
    return WorkerPool(SOURCE, device="cpu", **options)


@contextmanager
def live_server(pool: WorkerPool, **settings) -> Iterator[str]:
    """Serve `pool` (started here, in the background) on a free loopback port; yield the base URL."""
    pool.start(background=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio then sets NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(pool, Settings(**settings)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started), "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        pool.shutdown(wait=False)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_ready(url: str) -> None:
    assert wait_for(lambda: httpx.get(url + "/health").status_code == 200, 60), "the server never became ready"


def sse_events(lines) -> list:
    """The JSON of every `data:` line of an SSE stream (`[DONE]` stays a str)."""
    events = []
    for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events


def stream(url: str, route: str, body: dict) -> tuple[int, list]:
    """POST a streaming request; (status, SSE events) or (status, JSON error body)."""
    with httpx.Client(timeout=TIMEOUT) as c, c.stream("POST", url + route, json=body) as r:
        return r.status_code, sse_events(r.iter_lines()) if r.status_code == 200 else json.loads(r.read())


def assert_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param"} and error["message"], error
    return error
