"""Run the chat service: bind the address, build the pool and app, and serve them with uvicorn until
SIGINT/SIGTERM.

The socket is bound before anything loads, so a port in use or a host that does not resolve is one error
line at once (NanochatError -> `nanochat-py: error: ...`, exit 2), not uvicorn's abort after the model loaded.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import socket
import sys
import threading

import uvicorn

from ..errors import NanochatError
from .app import Settings, create_app
from .context import LOOPBACK_NAMES
from .pool import WorkerPool

log = logging.getLogger("nanochat_py.server")


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT the workers end every in-flight stream cleanly before uvicorn exits."""

    def __init__(self, config, pool: WorkerPool):
        super().__init__(config)
        self.pool = pool

    def handle_exit(self, sig, frame) -> None:
        self.pool.shutdown(wait=False)
        super().handle_exit(sig, frame)
        # a clean shutdown is a success: uvicorn would re-raise the signal at exit (status 143/130)
        if sig in getattr(self, "_captured_signals", []):
            self._captured_signals.remove(sig)


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (a name, IPv4 or IPv6), ready for uvicorn; NanochatError if it cannot be."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]  # fmt: skip
    except (socket.gaierror, UnicodeError) as e:
        raise NanochatError(f"cannot listen on {where}: the host does not resolve ({e}); use an address such "
                            "as 127.0.0.1, ::1 or 0.0.0.0, or a name this machine can resolve") from None  # fmt: skip
    except OverflowError:
        raise NanochatError(f"cannot listen on {where}: the port must be 0-65535") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart without waiting
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise NanochatError(f"cannot listen on {where}: the port is in use by another program; pick another "
                                "with --port") from None  # fmt: skip
        raise NanochatError(f"cannot listen on {where}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def host_policy(bound: str, host: str, extra: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """(Host names answered, whether any IP address is answered too) for a server bound to address `bound`.

    On loopback only loopback names: a page on another site that points its own DNS name at 127.0.0.1 (DNS
    rebinding) gets a 421. Bound beyond loopback, the server is meant to be reached by address, so any IP
    literal, localhost, the --host name and this machine's name. `extra` (--allowed-hosts) adds names; "*"
    answers every name.
    """
    if "*" in extra:
        return ("*",), True
    names = [*LOOPBACK_NAMES, *(n.lower() for n in extra)]
    if ipaddress.ip_address(bound.split("%")[0]).is_loopback:
        return tuple(dict.fromkeys(names)), False
    names += [host.lower(), socket.gethostname().lower()]
    return tuple(dict.fromkeys(names)), True


def serve(source, host: str, port: int, settings: Settings, num_workers: int = 1, max_batch: int = 16,
          max_queue: int = 64, device="auto", dtype=None, allowed_hosts: tuple[str, ...] = ()) -> int:  # fmt: skip
    sock = bind_socket(host, port)
    names, any_ip = host_policy(sock.getsockname()[0], host, allowed_hosts)
    settings = dataclasses.replace(settings, allowed_hosts=names, allow_ip_hosts=any_ip)
    pool = WorkerPool(source, num_workers, max_batch, max_queue, device, dtype)
    pool.start(background=True)
    app = create_app(pool, settings)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, access_log=False)
    server = _Server(config, pool)
    url = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}/"
    print(
        f"nanochat-py: loading {source or 'the default model'}; the chat will be at {url}", file=sys.stderr, flush=True
    )

    def announce() -> None:
        if pool.wait_ready():
            print(f"nanochat-py: ready - open {url}", file=sys.stderr, flush=True)
        else:
            server.should_exit = True  # a model that cannot load is fatal; the error is printed below

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])
    pool.shutdown()
    if pool.error:
        print(f"nanochat-py: error: {pool.error}", file=sys.stderr)
        return 2
    return 0
