"""The compiled CPU kernels of the decode step (decode.cpp), built once per machine at first use.

They are built with the machine's C++ compiler for its own CPU (`-march=native`: AVX-512, its bf16 dot
product and VNNI where present) by torch's extension builder, and cached (torch's `TORCH_EXTENSIONS_DIR`,
by default ~/.cache/torch_extensions) under a name that hashes the source, the flags, the CPU and torch,
so an upgrade or another machine sharing the home directory gets its own build. Without a compiler, or
with NANOCHAT_PY_KERNELS=0, `ops()` is None and the model runs plain torch ops: same results, slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import torch

log = logging.getLogger("nanochat_py")

SOURCE = Path(__file__).with_name("decode.cpp")
_built: dict[bool, SimpleNamespace | None] = {}
_lock = threading.Lock()
_enabled = os.environ.get("NANOCHAT_PY_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def ops() -> SimpleNamespace | None:
    """The kernels (`linear_rows`, `rms_norm`, `decode_block`), or None where they are switched off or
    cannot be built. Called often during a decode step, so it is a flag test and a lookup."""
    if not _enabled:
        return None
    return _built[False] if False in _built else build()


@contextlib.contextmanager
def switched_off() -> Iterator[None]:
    """Run plain torch ops inside the block (the reference the kernels are tested and timed against)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def build(portable: bool = False) -> SimpleNamespace | None:
    """Build (or load the cached build of) the kernels; `portable` skips the AVX-512 code (for tests)."""
    if portable in _built:
        return _built[portable]
    with _lock:
        if portable not in _built:
            _built[portable] = _compile(portable)
    return _built[portable]


def _flags(portable: bool) -> list[str]:
    flags = ["-O3", "-fopenmp"]  # at::parallel_for is OpenMP in torch's CPU builds: without it, one thread
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    elif platform.machine() in ("aarch64", "arm64"):
        flags.append("-mcpu=native")
    if portable:
        flags.append("-DNANOCHAT_PORTABLE")
    return flags


def _cpu_identity() -> str:
    """What the compiled code depends on: the CPU's model and instruction-set flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _compile(portable: bool) -> SimpleNamespace | None:
    from torch.utils import cpp_extension

    flags = _flags(portable)
    key = "\n".join([SOURCE.read_text(), *flags, _cpu_identity(), torch.__version__])
    name = "nanochat_py_decode_" + hashlib.sha256(key.encode()).hexdigest()[:16]
    cached = Path(cpp_extension._get_build_directory(name, verbose=False)) / f"{name}.so"
    if not cached.exists():
        log.warning("building nanochat-py's CPU kernels for this machine (once, about 15 s)")
    try:
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=[*flags, f"-DNANOCHAT_LIBRARY={name}"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError, cpp_extension.subprocess.CalledProcessError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning("nanochat-py's CPU kernels could not be built (%s); decoding uses plain torch ops", first_line)
        return None
    namespace = getattr(torch.ops, name)
    ops = ("linear_rows", "rms_norm", "decode_block")
    return SimpleNamespace(name=name, **{op: getattr(namespace, op) for op in ops})
