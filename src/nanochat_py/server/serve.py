"""Run the chat service: build the pool and app, and serve them with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys
import threading

import uvicorn

from .app import Settings, create_app
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


def serve(source, host: str, port: int, settings: Settings, num_workers: int = 1, max_batch: int = 16,
          max_queue: int = 64, device="auto", dtype=None) -> int:  # fmt: skip
    pool = WorkerPool(source, num_workers, max_batch, max_queue, device, dtype)
    pool.start(background=True)
    app = create_app(pool, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5,
                            access_log=False)  # fmt: skip
    server = _Server(config, pool)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    print(
        f"nanochat-py: loading {source or 'the default model'}; the chat will be at {url}", file=sys.stderr, flush=True
    )

    def announce() -> None:
        if pool.wait_ready():
            print(f"nanochat-py: ready - open {url}", file=sys.stderr, flush=True)
        else:
            server.should_exit = True  # a model that cannot load is fatal; the error is printed below

    threading.Thread(target=announce, daemon=True).start()
    server.run()
    pool.shutdown()
    if pool.error:
        print(f"nanochat-py: error: {pool.error}", file=sys.stderr)
        return 2
    return 0
