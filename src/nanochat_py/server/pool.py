"""Workers and the bounded queue in front of them, and whether they are fit to serve.

Models load in a background thread so the HTTP server answers /health (503, "loading") at once; the pool
is ready once every worker has run its warm-up step. On one device all workers share one copy of the
weights (they are read-only); with several GPUs, worker i runs on GPU i mod count with its own copy.
"""

from __future__ import annotations

import threading
import time

import torch

from ..chatbot import Chatbot
from ..loader import load, pick_device
from .job import Failed, Job
from .job_queue import JobQueue
from .worker import SHUTTING_DOWN, Worker

# a worker with work and no progress for this long is reported stalled; one prefill of a long prompt by a big
# model on a small CPU is a single forward pass that can take a minute or more, so leave room for it
STALL_AFTER_S = 300.0


class WorkerPool:
    def __init__(self, source, num_workers: int = 1, max_batch: int = 16, max_queue: int = 64, device="auto",
                 dtype=None, stall_after: float = STALL_AFTER_S):  # fmt: skip
        self.source = source
        self.num_workers = num_workers
        self.max_batch = max_batch
        self.device, self.dtype = device, dtype
        self.stall_after = stall_after
        self.pending = JobQueue(max_queue)
        self.workers: list[Worker] = []
        self.bot: Chatbot | None = None  # the first replica: tokenizer, config, prompt rendering
        self.load_error: str | None = None
        self.started = time.monotonic()
        self._loaded = threading.Event()
        self._exits = 0
        self._exit_lock = threading.Lock()

    # --- state --------------------------------------------------------------------------------------------
    @property
    def error(self) -> str | None:
        """Why the pool can never be ready: the model did not load, or a worker could not run it."""
        failures = [w.warm_up_error for w in self.workers if w.warm_up_error]
        return self.load_error or (failures[0] if failures else None)

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def ready(self) -> bool:
        """Loaded, and every worker has run the model once (its warm-up step)."""
        return self.loaded and self.error is None and all(w.warmed_up.is_set() for w in self.workers)

    @property
    def accepting(self) -> bool:
        return self.ready and any(w.alive for w in self.workers)

    def problems(self) -> list[str]:
        """What makes a ready pool unfit to serve: workers that died or stalled."""
        out = []
        for w in self.workers:
            if not w.alive:
                out.append(f"worker {w.index} has stopped")
            elif w.stalled(self.stall_after):
                out.append(f"worker {w.index} has made no progress for {w.heartbeat_age():.1f} s")
        return out

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        if background:
            threading.Thread(target=self._load, name="nanochat-load", daemon=True).start()
        else:
            self._load()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every worker has warmed up (or the pool failed); True if it is ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._loaded.wait(timeout):
            return False
        for w in self.workers:
            w.warmed_up.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.ready

    def _load(self) -> None:
        try:
            bots: dict[str, Chatbot] = {}
            for i in range(self.num_workers):
                device = self._device_for(i)
                if str(device) not in bots:
                    bots[str(device)] = load(self.source, device=device, dtype=self.dtype)
                bot = bots[str(device)]
                self.bot = self.bot or bot
                worker = Worker(i, bot.model, bot.tokenizer, self.pending, self.max_batch, self._worker_exited)
                self.workers.append(worker)
            for w in self.workers:
                w.start()
        except Exception as e:
            self.load_error = str(e)
        finally:
            self._loaded.set()

    def _device_for(self, index: int) -> torch.device:
        device = pick_device(self.device)
        if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
            return torch.device("cuda", index % torch.cuda.device_count())
        return device

    def _worker_exited(self, worker: Worker) -> None:
        """When the last worker is gone, nobody will take the waiting jobs: end them now."""
        with self._exit_lock:
            self._exits += 1
            last = self._exits == len(self.workers)
        if last:
            self._fail_waiting(Failed("no worker is running: the server needs a restart", 503))

    def _fail_waiting(self, failure: Failed) -> None:
        for job in self.pending.drain():
            job.send(failure)

    # --- jobs ---------------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        self.pending.put(job)  # raises job_queue.QueueFull

    def cancel(self, job: Job) -> None:
        """The client has gone: free the job's queue place now, or its row at the worker's next step."""
        job.cancelled = True
        self.pending.remove(job)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; in-flight jobs end with an error event, so their streams close cleanly."""
        for w in self.workers:
            w.stop()  # each worker fails its in-flight jobs as it exits
        self._fail_waiting(Failed(SHUTTING_DOWN, 503))
        for w in self.workers if wait else ():
            w.thread.join(timeout=5)

    def stats(self) -> dict:
        busy = [w for w in self.workers if w.active]
        return {
            "total_workers": len(self.workers),
            "available_workers": len(self.workers) - len(busy),
            "busy_workers": len(busy),
            "queue_length": self.pending.qsize(),
            "max_queue": self.pending.maxsize,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "workers": [
                {
                    "id": w.index,
                    "device": w.device,
                    "warmed_up": w.warmed_up.is_set() and w.warm_up_error is None,
                    "alive": w.alive,
                    "stalled": w.alive and w.stalled(self.stall_after),
                    "heartbeat_age_s": round(w.heartbeat_age(), 3),
                    "active_requests": w.active,
                    "max_batch": w.max_batch,
                    "requests_served": w.requests_served,
                    "tokens_served": w.tokens_served,
                }
                for w in self.workers
            ],
        }
