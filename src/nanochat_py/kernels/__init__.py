"""The compiled CPU kernels of the decode step (decode.cpp): built once per environment, loaded directly.

They are compiled with the machine's C++ compiler for its own CPU (`-march=native`: AVX-512, its bf16 dot
product and VNNI where present, else AVX2, else portable loops) by torch's extension builder. Where they
live and how they are built keeps every run safe from every other:

- The library is named by a hash of everything that affects it (source, flags, CPU, torch, Python, the
  compiler variable CXX, the environment's prefix) and kept in the environment's own directory
  (`<venv>/share/nanochat-py/kernels`, or a per-user cache when that is read-only; NANOCHAT_PY_KERNEL_DIR
  overrides), so no other checkout or venv ever writes it.
- `make` builds it (`python -m nanochat_py.kernels`). A run only loads the finished file: it never runs the
  build system, and never waits. Where there is no build yet, the run starts one in the background and
  decodes with plain torch ops meanwhile (one warning line), looking for the library once a second: it
  switches to the kernels as soon as the build lands (a server started mid-build does not stay slow).
- A build compiles in a private temporary directory and moves the library in with one atomic rename, so a
  build killed at any moment leaves nothing half-done. Builders take an OS file lock (flock), which dies
  with its holder: a killed builder's lock is never stale.
- A failed build is remembered (`<name>.failed`, with the compiler's output), so runs do not retry it over
  and over; `python -m nanochat_py.kernels` retries. NANOCHAT_PY_KERNELS=0 switches the kernels off.

Without the kernels, `ops()` is None and the model runs plain torch ops: same results, slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import torch

try:
    import fcntl
except ImportError:  # Windows: no flock; the atomic rename still keeps builds whole
    fcntl = None

log = logging.getLogger("nanochat_py")

SOURCE = Path(__file__).with_name("decode.cpp")
OPS = ("linear_rows", "rms_norm", "decode_block", "dequantize")
_loaded: dict[str, SimpleNamespace | None] = {}
# the builds and what sets them apart: a run uses "native" (its CPU's widest vectors); the tests build all three
_VARIANT_FLAGS = {"native": [], "avx2": ["-DNANOCHAT_NO_AVX512"], "portable": ["-DNANOCHAT_PORTABLE"]}
VARIANTS = tuple(_VARIANT_FLAGS)
_lock = threading.Lock()
_pending: Build | None = None  # the background build this run waits on, while `_loaded["native"]` is None
_next_look = 0.0  # time.monotonic() of the next look for its library
_enabled = os.environ.get("NANOCHAT_PY_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def ops() -> SimpleNamespace | None:
    """The kernels (`linear_rows`, `rms_norm`, `decode_block`), or None where they are switched off or not
    built. Called often during a decode step, so it is a flag test and a lookup (and, while a background
    build runs, a look for its library once a second)."""
    if not _enabled:
        return None
    if "native" not in _loaded:
        return load()
    if _pending is not None and time.monotonic() >= _next_look:
        _pick_up_pending()
    return _loaded["native"]


def _pick_up_pending() -> None:
    """Load the library of the background build this run is waiting on, once it is in: a server or a chat
    started while the kernels were building switches to them then, instead of decoding on plain torch ops
    (int4 at ~2% of the kernels' speed) for the rest of its life."""
    global _pending, _next_look
    with _lock:
        _next_look = time.monotonic() + 1.0
        if _pending is None:
            return
        if _pending.library.exists():
            _loaded["native"] = open_library(_pending.library)
            _pending = None
            if _loaded["native"] is not None:
                log.info("nanochat-py's CPU kernels finished building: decoding uses them from now on")
        elif _pending.failed.exists():
            _pending = None  # the build failed (remembered for later runs): plain torch ops it is


@contextlib.contextmanager
def switched_off() -> Iterator[None]:
    """Run plain torch ops inside the block (the reference the kernels are tested and timed against)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def load(variant: str = "native") -> SimpleNamespace | None:
    """The kernels from this environment's finished build, at once; None (after starting a background
    build, or saying why there is none) where there is no usable build."""
    with _lock:
        if variant not in _loaded:
            _loaded[variant] = _load_or_start_build(Build(variant))
    return _loaded[variant]


def build(variant: str = "native") -> SimpleNamespace | None:
    """Build the kernels now unless built (waiting for a build another process is running), then load
    them. For `make` and the tests: "avx2" leaves out the AVX-512 code, "portable" every intrinsic. None
    when the build fails."""
    with _lock:
        if _loaded.get(variant) is None:
            target = Build(variant)
            _loaded[variant] = open_library(target.library) if target.compile(wait=True) else None
    return _loaded[variant]


class Build:
    """One build of decode.cpp for this machine and environment: its name, its files, and how to make it."""

    def __init__(self, variant: str = "native", directory: Path | None = None):
        self.variant = variant
        self.flags = _flags(variant)
        self.directory = directory or kernel_dir()
        key = "\n".join([SOURCE.read_text(), *self.flags, *_environment()])
        self.name = "nanochat_py_decode_" + hashlib.sha256(key.encode()).hexdigest()[:16]
        self.library = self.directory / f"{self.name}.so"
        self.failed = self.directory / f"{self.name}.failed"
        self.lockfile = self.directory / f"{self.name}.lock"

    def compile(self, wait: bool) -> bool:
        """Compile unless the library exists; True when it exists afterwards. `wait=False` gives up at
        once (False) when another process holds the build lock."""
        if self.library.exists():
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.lockfile, "a+") as lock:
            if not _take(lock, wait):
                return False
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")  # who builds, for a person looking at the directory
            lock.flush()
            if self.library.exists():  # the process we waited for built it
                return True
            return self._compile_locked()

    def _compile_locked(self) -> bool:
        from torch.utils import cpp_extension

        for stale in self.directory.glob(f"{self.name}.tmp-*"):  # left by killed builders: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        work = self.directory / f"{self.name}.tmp-{os.getpid()}"
        work.mkdir()
        try:
            cpp_extension.load(
                name=self.name,
                sources=[str(SOURCE)],
                extra_cflags=[*self.flags, f"-DNANOCHAT_LIBRARY={self.name}"],
                extra_ldflags=["-fopenmp"],
                build_directory=str(work),
                is_python_module=False,
                verbose=False,
            )
            built = work / f"{self.name}.so"
            with open(built, "rb") as f:
                os.fsync(f.fileno())  # whole on disk before it takes the final name
            os.replace(built, self.library)
            self.failed.unlink(missing_ok=True)
            return True
        except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as e:
            self.failed.write_text(f"{_first_line(e)}\n\n{e}\n")
            log.warning(
                "nanochat-py's CPU kernels could not be built (%s); decoding uses plain torch ops", _first_line(e)
            )
            return False
        finally:
            shutil.rmtree(work, ignore_errors=True)


def kernel_dir() -> Path:
    """This environment's own directory for its builds."""
    if os.environ.get("NANOCHAT_PY_KERNEL_DIR"):
        return Path(os.environ["NANOCHAT_PY_KERNEL_DIR"]).expanduser()
    prefix = Path(sys.prefix)
    if os.access(prefix, os.W_OK):
        return prefix / "share" / "nanochat-py" / "kernels"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "nanochat-py" / "kernels"  # names are keyed by the prefix, so environments never collide


def _load_or_start_build(target: Build) -> SimpleNamespace | None:
    if target.library.exists():
        return open_library(target.library)
    if target.failed.exists():
        log.warning(
            "nanochat-py's CPU kernels failed to build earlier (%s; details in %s); decoding uses plain torch "
            "ops. Retry with: %s -m nanochat_py.kernels", _first_line(target.failed.read_text()), target.failed,
            sys.executable,
        )  # fmt: skip
        return None
    global _pending
    _start_background_build(target)
    if target.variant == "native":
        _pending = target
    log.warning(
        "nanochat-py's CPU kernels are not built for this environment yet: building them in the background "
        "(about 15 s; `make` builds them at install); until then this run uses plain torch ops"
    )
    return None


def _start_background_build(target: Build) -> None:
    """A detached builder: it outlives this run (Ctrl-C here does not kill it) and gives up at once if
    another process is already building."""
    args = [sys.executable, "-m", "nanochat_py.kernels", "--background", "--variant", target.variant]
    try:
        subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "NANOCHAT_PY_KERNEL_DIR": str(target.directory)},
        )  # fmt: skip
    except OSError as e:
        log.warning("could not start a background build of the CPU kernels (%s)", e)


def open_library(library: Path) -> SimpleNamespace | None:
    """A built library's ops (its file is named after its op namespace), or None, saying why, when it does
    not load. Runs take theirs from `ops()`; benchmarks/kernel_ab.py opens two builds side by side."""
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as e:
        log.warning("nanochat-py's CPU kernels in %s do not load (%s); decoding uses plain torch ops. Rebuild with: "
                    "%s -m nanochat_py.kernels --rebuild", library, _first_line(e), sys.executable)  # fmt: skip
        return None
    namespace = getattr(torch.ops, library.stem)
    return SimpleNamespace(name=library.stem, path=library, **{op: getattr(namespace, op) for op in OPS})


def _take(lock, wait: bool) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def _flags(variant: str) -> list[str]:
    if variant not in _VARIANT_FLAGS:
        raise ValueError(f"unknown kernel variant {variant!r}: one of {', '.join(VARIANTS)}")
    flags = ["-O3", "-fopenmp"]  # at::parallel_for is OpenMP in torch's CPU builds: without it, one thread
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    elif platform.machine() in ("aarch64", "arm64"):
        flags.append("-mcpu=native")
    flags += _VARIANT_FLAGS[variant]
    return flags


def _environment() -> list[str]:
    """What else the compiled library depends on: the CPU, torch, Python, the compiler, the environment."""
    return [_cpu_identity(), torch.__version__, str(Path(torch.__file__).parent), sys.version, sys.prefix,
            os.environ.get("CXX", "c++")]  # fmt: skip


def _cpu_identity() -> str:
    """The CPU's model and instruction-set flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _first_line(e: BaseException | str) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
