"""Building the compiled kernels can never hang a run, and never happens twice for one environment.

These run real builds (about 15 s each on 2 cores) in per-test directories, and real `nanochat-py chat`
processes, because the failures they guard against (a lock left by a killed build, two checkouts
recompiling each other's build) only show up across processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nanochat_py

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to build the kernels")

BUILD = "import nanochat_py.kernels as k; k.build()"  # what `make` does at install
CHAT = ["-m", "nanochat_py.cli", "chat", "-p", "Hi", "-t", "0", "-m", "4"]
LOADED = "import nanochat_py.kernels as k; o = k.ops(); print((getattr(o, 'path', None) or o.name) if o else 'none')"


def _env(kernel_dir: Path) -> dict:
    # both variables: the kernels' own directory, and torch's extension directory an older build used
    return {**os.environ, "NANOCHAT_PY_KERNEL_DIR": str(kernel_dir), "TORCH_EXTENSIONS_DIR": str(kernel_dir)}


def _files(*roots: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for root in roots if root.exists() for p in root.rglob("*") if p.is_file()}


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_builds_killed_at_any_moment_never_hang_a_later_run(tmp_path):
    kernel_dir = tmp_path / "kernels"
    env = _env(kernel_dir)
    # the first moments of a build: importing torch, compiling, and (on 2 cores) near the end of compiling
    for delay, sig in ((0.5, signal.SIGTERM), (3.0, signal.SIGKILL), (6.0, signal.SIGTERM), (10.0, signal.SIGKILL)):
        builder = subprocess.Popen([sys.executable, "-c", BUILD], env=env, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        builder.send_signal(sig)
        builder.wait(timeout=30)
        assert not list(kernel_dir.glob("*.so")), "a killed build must leave no library behind"

    started = time.monotonic()
    run = subprocess.run([sys.executable, *CHAT], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), "the run must answer"
    assert time.monotonic() - started < 60
    assert run.stderr.count("\n") == 1 and "building them in the background" in run.stderr

    # the run started a build in the background; once it is in, the next run loads it without building
    assert _wait_for(lambda: list(kernel_dir.glob("*.so")), timeout=180), "the background build never finished"
    assert not list(kernel_dir.glob("*.tmp-*")), "the build's work directory is removed"
    loaded = subprocess.run([sys.executable, "-c", LOADED], env=env, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == str(next(kernel_dir.glob("*.so"))) and loaded.stderr == ""


# a long-lived run (a server): what ops() gives at once, then whether it ever gives the kernels, polling
# the way decode steps call it
POLLING = (
    "import time, nanochat_py.kernels as k; print(k.ops() is None, flush=True); t = time.monotonic()\n"
    "while k.ops() is None and time.monotonic() - t < 240: time.sleep(0.05)\n"
    "print(k.ops().path if k.ops() else 'none')"
)


def test_a_run_never_waits_for_a_build_in_progress_and_picks_it_up_when_it_lands(tmp_path):
    kernel_dir = tmp_path / "kernels"
    env = _env(kernel_dir)
    builder = subprocess.Popen([sys.executable, "-c", BUILD], env=env, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: list(kernel_dir.glob("*.tmp-*")), timeout=30), "the build did not start"
        run = subprocess.Popen([sys.executable, "-c", POLLING], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert run.stdout.readline().strip() == "True", "the run must start at once, on plain torch ops"
        assert builder.poll() is None, "the build must still be running for this check to mean anything"
        out, err = run.communicate(timeout=300)
        assert "building them in the background" in err
        assert out.strip() == str(next(kernel_dir.glob("*.so"))), "the run must switch to the finished build"
    finally:
        builder.kill()
        builder.wait()


def _second_environment(tmp_path: Path) -> Path:
    """Another checkout (a copy of the package) in another venv that borrows this venv's torch."""
    clone = tmp_path / "clone" / "src"
    shutil.copytree(Path(nanochat_py.__file__).parent, clone / "nanochat_py",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir() and "torch" in os.listdir(p))
    (site / "clone.pth").write_text(f"{clone}\nimport site; site.addsitedir({ours!r})\n")
    return venv / "bin" / "python"


def test_two_environments_alternate_without_rebuilding(tmp_path):
    torch_extensions = tmp_path / "torch_extensions"  # where an older build kept every environment's build
    env = {k: v for k, v in os.environ.items() if k != "NANOCHAT_PY_KERNEL_DIR"}
    env["TORCH_EXTENSIONS_DIR"] = str(torch_extensions)
    pythons = [Path(sys.executable), _second_environment(tmp_path)]
    prefixes = [Path(subprocess.check_output([p, "-c", "import sys; print(sys.prefix)"], text=True).strip())
                for p in pythons]  # fmt: skip
    assert prefixes[0] != prefixes[1]
    for python in pythons:  # each environment's install step
        subprocess.run([python, "-c", BUILD], env=env, check=True, timeout=300, stderr=subprocess.DEVNULL)
    paths = [subprocess.run([p, "-c", LOADED], env=env, capture_output=True, text=True).stdout for p in pythons]
    assert paths[0] != paths[1] and "none" not in paths, "each environment loads its own build"

    before = _files(torch_extensions, *(p / "share" for p in prefixes))
    for python in pythons * 2:
        run = subprocess.run([python, *CHAT], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip(), run.stderr
        assert run.stderr == "", "a run with a finished build says nothing"
    assert _files(torch_extensions, *(p / "share" for p in prefixes)) == before, "nothing was rebuilt"
