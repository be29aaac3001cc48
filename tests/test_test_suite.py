"""The test suite itself: a Ctrl-C stops `make test` even while a test runs code that catches it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SWALLOWING_TESTS = """
import time
from pathlib import Path

def test_runs_code_that_catches_ctrl_c():
    Path({marker!r}).touch()
    try:
        time.sleep(60)
    except KeyboardInterrupt:  # as nanochat-py's CLI does: Ctrl-C ends a reply, or the command with status 130
        pass

def test_the_next_one():
    time.sleep(60)
"""


def test_ctrl_c_stops_the_run_even_when_the_code_under_test_catches_it(tmp_path):
    marker = tmp_path / "inside"
    (tmp_path / "test_swallowing.py").write_text(SWALLOWING_TESTS.format(marker=str(marker)))
    (tmp_path / "conftest.py").write_text("pytest_plugins = ['stop_on_ctrl_c']\n")  # what tests/conftest.py loads
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches the whole foreground process group
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not marker.exists():
            raise AssertionError(f"the first test never started: {run.communicate(timeout=30)[0]}")
        os.killpg(run.pid, signal.SIGINT)
        output, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode != 0, output
    assert "1 passed" in output and "Ctrl-C" in output, output  # stopped after the test that swallowed it
