"""The sandbox that runs model-written code: right programs pass, wrong ones fail, and hostile ones fail
and harm nothing (no process left behind, no file outside their directory, no network, no secrets)."""

from __future__ import annotations

import builtins
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nanochat_py.evals.sandbox import run_python

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="the OS layers are Linux's")


def sandbox_processes(marker: str) -> list[int]:
    """Processes still running a sandbox whose command line holds `marker` (its timeout argument)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"sandbox.py") for a in argv) and marker.encode() in argv:
            found.append(int(proc.name))
    return found


def test_a_right_program_passes_and_a_wrong_one_fails():
    right = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')")
    assert right.passed and right.stdout == "ok\n" and not right.timed_out
    wrong = run_python("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5")
    assert not wrong.passed and "AssertionError" in wrong.stderr
    assert not run_python("def add(a, b) return a + b").passed  # a syntax error
    assert not run_python("import sys\nsys.exit(0)").passed  # only running to the end passes, as in nanochat


def test_numpy_imports_as_in_nanochats_sandbox():
    # nanochat runs programs in a fork of a process that has numpy loaded, so `import numpy` works there
    assert run_python("import numpy as np\nassert np.arange(4).sum() == 6").passed


def test_the_program_runs_in_another_process():
    result = run_python("import builtins\nbuiltins.SANDBOX_MARK = 1\nimport os\nprint(os.getpid())")
    assert result.passed and int(result.stdout) != os.getpid()
    assert not hasattr(builtins, "SANDBOX_MARK")


@linux_only
def test_a_fork_bomb_fails_and_leaves_no_process():
    start = time.monotonic()
    # posix.fork and os.posix_spawn are not the os.fork that the nanochat-compatible guard disables
    bomb = run_python("import posix\nwhile True:\n    posix.fork()", timeout=2.0417)
    spawn = run_python("import os\nos.posix_spawn('/bin/sleep', ['sleep', '60'], {})", timeout=2.0417)
    assert time.monotonic() - start < 5
    for result in (bomb, spawn):
        assert not result.passed and not result.timed_out
        assert "PermissionError" in result.stderr or "BlockingIOError" in result.stderr
    assert sandbox_processes("2.0417") == []
    threads = run_python("import threading\nt = threading.Thread(target=print, args=('thread',))\nt.start()\nt.join()")
    assert threads.passed and threads.stdout == "thread\n"  # threads are not processes: they still work


@linux_only
def test_a_program_that_sleeps_forever_is_killed_at_the_timeout():
    for program in (
        "import time\ntime.sleep(1000)",
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",  # ignores the timer
    ):
        start = time.monotonic()
        result = run_python(program, timeout=1.0317)
        assert result.timed_out and not result.passed
        assert time.monotonic() - start < 4
    assert sandbox_processes("1.0317") == []


def test_a_program_that_fills_memory_fails():
    start = time.monotonic()
    result = run_python("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", memory=128 * 2**20)
    assert not result.passed and "MemoryError" in result.stderr
    assert time.monotonic() - start < 10
    assert not run_python("x = bytearray(10**10)").passed


def test_a_program_that_writes_a_huge_file_fails():
    result = run_python("with open('big', 'wb') as f:\n    f.write(b'0' * (64 * 2**20))", max_file=2**20)
    assert not result.passed and "File too large" in result.stderr
    small = run_python("open('small', 'w').write('fine')\nassert open('small').read() == 'fine'")
    assert small.passed  # its own directory is writable


@linux_only
def test_a_program_that_writes_outside_its_directory_fails(tmp_path):
    outside = tmp_path / "escape.txt"
    for program in (
        f"open({str(outside)!r}, 'w').write('x')",
        "open('../escape.txt', 'w').write('x')",
        f"import os\nos.mkdir({str(tmp_path / 'escape_dir')!r})",
    ):
        result = run_python(program)
        assert not result.passed and "PermissionError" in result.stderr, program
    assert list(tmp_path.iterdir()) == []


def test_the_program_starts_in_an_empty_directory_with_no_secrets(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    program = (
        "import os\n"
        "assert os.listdir('.') == []\n"
        "assert not any('secret' in v for v in os.environ.values()), dict(os.environ)\n"
        "allowed = {'PATH', 'HOME', 'TMPDIR', 'LANG', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS'}\n"
        "assert set(os.environ) <= allowed, dict(os.environ)\n"
    )
    result = run_python(program)
    assert result.passed, result.stderr


@linux_only
def test_a_program_cannot_reach_the_network():
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        port = server.getsockname()[1]
        result = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert not result.passed and ("OSError" in result.stderr or "PermissionError" in result.stderr)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing came through


@linux_only
def test_a_program_cannot_signal_other_processes():
    victim = subprocess.Popen(["sleep", "30"])
    try:
        result = run_python(f"import posix, signal\nposix.kill({victim.pid}, signal.SIGKILL)")
        if result.isolation.get("landlock_abi", 0) < 6:
            pytest.skip("signals are scoped by Landlock from ABI 6 (Linux 6.12) on; without it only user ids help")
        assert not result.passed and "PermissionError" in result.stderr
        assert victim.poll() is None  # still alive
    finally:
        victim.kill()
        victim.wait()
