"""Running model-written Python (HumanEval completions) where it can harm nothing.

Every program runs in a process of its own, a fresh interpreter started for it (model output is never
exec'd in our process), with:
- an empty temporary working directory, a minimal environment (no tokens, keys or proxies of ours), no
  readable stdin, and a process group of its own;
- limits: CPU time, address space (memory), file size, open files and processes (RLIMIT_NPROC, which the
  kernel does not apply to root: hence the seccomp filter below);
- on Linux, as far as the kernel allows (each layer is tried, and `Result.isolation` says which held):
  no network (an empty network namespace, entered unprivileged through a user namespace; failing that,
  Landlock denies TCP); no new processes (a seccomp filter makes fork, vfork and clone without
  CLONE_THREAD fail, so threads still work); writes only beneath its working directory, and no signals to
  processes outside it (Landlock);
- a wall-clock timeout, after which its whole process group is killed.

What a program may do is otherwise nanochat's: it passes when it runs to the end without raising, within
`timeout` seconds and `memory` bytes (nanochat's 5 s and 256 MiB), and the functions nanochat's sandbox
disables (os.fork, os.remove, subprocess.Popen, exit(), ...) are disabled here too, so that the same
programs pass.

This file is also the program that sets all of that up: the parent runs it by path in the new process
(`python -I sandbox.py ...`), so it imports nothing but the standard library.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import resource
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 5.0  # nanochat's defaults for HumanEval
MEMORY_BYTES = 256 * 2**20
MAX_FILE_BYTES = 16 * 2**20
MAX_PROCESSES = 32
MAX_OPEN_FILES = 64
OUTPUT_CHARS = 64 * 1024  # of stdout / stderr kept in the result


@dataclass
class Result:
    passed: bool  # ran to the end without raising, in time
    timed_out: bool
    returncode: int | None
    stdout: str
    stderr: str
    isolation: dict = field(default_factory=dict)  # which of the OS layers held (see the module docstring)


def run_python(
    code: str,
    timeout: float = TIMEOUT_S,
    memory: int = MEMORY_BYTES,
    max_file: int = MAX_FILE_BYTES,
    max_processes: int = MAX_PROCESSES,
) -> Result:
    """Run `code` in a new sandboxed process and say whether it passed."""
    with tempfile.TemporaryDirectory(prefix="nanochat-sandbox-", ignore_cleanup_errors=True) as box:
        box = Path(box)
        work = box / "work"
        work.mkdir(mode=0o700)
        (box / "program.py").write_text(code, encoding="utf-8")
        limits = [math.ceil(timeout) + 1, memory, max_file, max_processes, MAX_OPEN_FILES]
        argv = [sys.executable, "-I", "-B", __file__, str(work), str(box / "program.py"), str(box / "status")]
        argv += [str(timeout), *map(str, limits)]
        with open(box / "stdout", "wb") as out, open(box / "stderr", "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=work, env=_environment(work), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )  # fmt: skip
            timed_out = False
            try:
                proc.wait(timeout + 1.0)  # the program's own timer fires at `timeout`; this covers the start-up
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)  # anything it left behind, too
                proc.wait()
        status = _read_json(box / "status")
        returncode = None if timed_out else proc.returncode
        timed_out = timed_out or returncode == -signal.SIGALRM
        return Result(
            passed=returncode == 0 and status.get("ran", False),
            timed_out=timed_out,
            returncode=returncode,
            stdout=_read_text(box / "stdout"),
            stderr=_read_text(box / "stderr"),
            isolation={k: v for k, v in status.items() if k != "ran"},
        )


def _environment(work: Path) -> dict[str, str]:
    """Only what an interpreter needs: nothing of ours (tokens, keys, proxies) reaches the program. One BLAS
    thread, as nanochat sets it, also keeps numpy within the memory limit."""
    return {
        "PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    }  # fmt: skip


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_text(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(OUTPUT_CHARS).decode("utf-8", errors="replace")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- inside the sandboxed process ------------------------------------------------------------------------------

CLONE_NEWUSER, CLONE_NEWNET, CLONE_THREAD = 0x10000000, 0x40000000, 0x00010000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _child(argv: list[str]) -> None:
    work, program, status_path, timeout = argv[0], argv[1], argv[2], float(argv[3])
    cpu, memory, max_file, max_processes, max_open = map(int, argv[4:9])
    code = Path(program).read_text(encoding="utf-8")
    status = open(status_path, "w")  # opened before Landlock shuts writes outside `work`
    libc = _libc()
    layers = {"network_namespace": _new_network_namespace(libc)}
    _set_limits(cpu, memory, max_file, max_processes, max_open)
    layers["landlock_abi"] = _landlock(libc, work, deny_tcp=not layers["network_namespace"])
    layers["no_new_processes"] = _forbid_new_processes(libc)
    json.dump({**layers, "ran": True}, status)
    status.close()
    signal.setitimer(signal.ITIMER_REAL, timeout)  # SIGALRM's default action ends the process
    _run(code)


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _new_network_namespace(libc) -> bool:
    """Enter a new, empty network namespace (only a loopback that is down). Root may do so directly; anyone
    else through a new user namespace, in which we map our own ids so that files we create stay ours."""
    if libc is None or not hasattr(libc, "unshare"):
        return False
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return libc.unshare(CLONE_NEWNET) == 0
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return False
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError:
        pass  # the namespace still holds; only new files may not be creatable
    return True


def _set_limits(cpu: int, memory: int, max_file: int, max_processes: int, max_open: int) -> None:
    for limit, value in (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_DATA, memory),
        (resource.RLIMIT_FSIZE, max_file),
        (resource.RLIMIT_NPROC, max_processes),
        (resource.RLIMIT_NOFILE, max_open),
        (resource.RLIMIT_CORE, 0),
    ):
        _, hard = resource.getrlimit(limit)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (value, value))


# Landlock (Linux 5.13+): an unprivileged process can give up rights for itself and its children.
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446  # the same on every arch
_FS_WRITE_FILE, _FS_REMOVE_DIR, _FS_REMOVE_FILE, _FS_MAKE_CHAR = 1 << 1, 1 << 4, 1 << 5, 1 << 6
_FS_MAKE_DIR, _FS_MAKE_REG, _FS_MAKE_SOCK, _FS_MAKE_FIFO = 1 << 7, 1 << 8, 1 << 9, 1 << 10
_FS_MAKE_BLOCK, _FS_MAKE_SYM, _FS_REFER, _FS_TRUNCATE = 1 << 11, 1 << 12, 1 << 13, 1 << 14
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


def _landlock(libc, work: str, deny_tcp: bool) -> int:
    """Allow writes only beneath `work` (and to /dev/null), deny TCP if asked, and keep signals and abstract
    unix sockets from reaching outside this process. Returns the Landlock ABI used, 0 if there is none."""
    if libc is None or platform.system() != "Linux":
        return 0
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(ctypes.c_long(_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0
    fs = _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE_CHAR | _FS_MAKE_DIR | _FS_MAKE_REG
    fs |= _FS_MAKE_SOCK | _FS_MAKE_FIFO | _FS_MAKE_BLOCK | _FS_MAKE_SYM
    fs |= (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 and deny_tcp else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the attribute struct grew with the ABI
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", fs, net, scoped)[:size], size)
    ruleset = syscall(ctypes.c_long(_LANDLOCK_CREATE_RULESET), attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    rules = [(work, fs & ~(_FS_MAKE_CHAR | _FS_MAKE_BLOCK)), (os.devnull, fs & (_FS_WRITE_FILE | _FS_TRUNCATE))]
    for path, allowed in rules:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)  # landlock_path_beneath_attr
        ok = syscall(ctypes.c_long(_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(1), rule, 0) == 0
        os.close(fd)
        if not ok:
            os.close(ruleset)
            return 0
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    ok = syscall(ctypes.c_long(_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    os.close(ruleset)
    return abi if ok else 0


# seccomp: (audit arch, fork, vfork, clone, clone3, syscalls numbered with this bit are another ABI (x32))
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, 57, 58, 56, 435, 0x40000000),
    "aarch64": (0xC00000B7, None, None, 220, 435, None),
}


def _forbid_new_processes(libc) -> bool:
    """A seccomp filter: fork, vfork and clone without CLONE_THREAD fail with EPERM; clone3 (whose flags a
    filter cannot read) fails with ENOSYS, so that the C library falls back to clone. Threads still work."""
    arch = _SECCOMP_ARCH.get(platform.machine())
    if libc is None or arch is None or platform.system() != "Linux":
        return False
    program = _seccomp_program(*arch)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    code = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(code, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


def _seccomp_program(audit_arch, fork, vfork, clone, clone3, foreign_abi_bit) -> bytes:
    """Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}, little-endian."""
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JSET|K, BPF_RET|K
    # (op, k, jump-if-true label, jump-if-false label); None = the next instruction
    ops = [(ld, 4, None, None), (jeq, audit_arch, None, "kill"), (ld, 0, None, None)]
    if foreign_abi_bit:
        ops.append((jset, foreign_abi_bit, "deny", None))
    ops.append((jeq, clone3, "enosys", None))
    ops += [(jeq, nr, "deny", None) for nr in (fork, vfork) if nr is not None]
    ops += [(jeq, clone, None, "allow"), (ld, 16, None, None), (jset, CLONE_THREAD, "allow", "deny")]
    returns = {"allow": 0x7FFF0000, "deny": 0x00050000 | 1, "enosys": 0x00050000 | 38, "kill": 0x80000000}
    where = {name: len(ops) + i for i, name in enumerate(returns)}
    out = b""
    for i, (op, k, if_true, if_false) in enumerate(ops):
        jt = where[if_true] - i - 1 if if_true else 0
        jf = where[if_false] - i - 1 if if_false else 0
        out += struct.pack("=HBBI", op, jt, jf, k)
    return out + b"".join(struct.pack("=HBBI", ret, 0, 0, k) for k in returns.values())


# What nanochat's own sandbox takes away from a program (set to None), taken away here too: a program that
# calls one of them fails there, so it must fail here.
_DISABLED = {
    "builtins": ("exit", "quit", "help"),
    "os": (
        "kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
        "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
        "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir",
    ),
    "shutil": ("rmtree", "move", "chown"),
    "subprocess": ("Popen",),
}  # fmt: skip
_HIDDEN_MODULES = ("ipdb", "joblib", "resource", "psutil", "tkinter")


class _NoInput:
    """stdin: reading it fails, as in nanochat's sandbox."""

    def read(self, *args):
        raise OSError("stdin is not available")

    readline = readlines = read

    def readable(self) -> bool:
        return False


def _run(code: str) -> None:
    import faulthandler
    import importlib
    import traceback

    faulthandler.disable()
    if "numpy" in code:
        _preload_numpy()
    sys.stdin = _NoInput()
    for module, names in _DISABLED.items():
        target = importlib.import_module(module)
        for name in names:
            setattr(target, name, None)
    for name in _HIDDEN_MODULES:
        sys.modules[name] = None
    try:
        exec(compile(code, "program.py", "exec"), {})  # a bare namespace, as nanochat runs it
    except BaseException:  # SystemExit too: only running to the end passes
        traceback.print_exc()
        _flush_and_exit(1)
    _flush_and_exit(0)


def _preload_numpy() -> None:
    """nanochat runs programs in a fork of its own process, where numpy is already loaded; here importing it
    would trip over the disabled functions (it calls os.putenv), so load it first, as it would be there."""
    try:
        import numpy  # noqa: F401
    except Exception:
        pass  # not installed (or over the memory limit): the program's own import fails as it should


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a full file or a closed stream: what was written stays
            pass
    os._exit(code)


if __name__ == "__main__":
    _child(sys.argv[1:])
