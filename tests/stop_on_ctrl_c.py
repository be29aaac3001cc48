"""A pytest plugin (loaded by conftest.py): Ctrl-C stops the run even when the code under test catches it.

Many tests run nanochat-py's own entry points in-process, and those catch KeyboardInterrupt on purpose (Ctrl-C
ends a chat reply, or a command with status 130). A Ctrl-C meant for `make test` that landed in one of them
was taken as theirs, and the run went on for minutes. The handler below notes every Ctrl-C before it raises
KeyboardInterrupt as usual, and the run stops after the test it interrupted, whatever that test did with it.
"""

from __future__ import annotations

import signal
import threading

import pytest

_interrupted = threading.Event()


def _note_and_raise(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


def pytest_configure(config):
    if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
        signal.signal(signal.SIGINT, _note_and_raise)


def pytest_runtest_logfinish(nodeid, location):
    if _interrupted.is_set():
        pytest.exit(f"interrupted by Ctrl-C during {nodeid}", returncode=pytest.ExitCode.INTERRUPTED)
