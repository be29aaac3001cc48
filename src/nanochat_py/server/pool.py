"""Workers and the bounded queue in front of them.

Models load in a background thread so the HTTP server answers /health (503, "loading") at once. On
one device all workers share one copy of the weights (they are read-only); with several GPUs, worker i
runs on GPU i mod count with its own copy.
"""

from __future__ import annotations

import queue
import threading
import time

import torch

from ..chatbot import Chatbot
from ..loader import load, pick_device
from .job import Failed, Job
from .worker import Worker


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows."""


class WorkerPool:
    def __init__(self, source, num_workers: int = 1, max_batch: int = 16, max_queue: int = 64, device="auto",
                 dtype=None):  # fmt: skip
        self.source = source
        self.num_workers = num_workers
        self.max_batch = max_batch
        self.device, self.dtype = device, dtype
        self.pending: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.workers: list[Worker] = []
        self.bot: Chatbot | None = None  # the first replica: tokenizer, config, prompt rendering
        self.error: str | None = None
        self.started = time.monotonic()
        self._loaded = threading.Event()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self.error is None

    def start(self, background: bool = True) -> None:
        if background:
            threading.Thread(target=self._load, name="nanochat-load", daemon=True).start()
        else:
            self._load()

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._loaded.wait(timeout)
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
                self.workers.append(Worker(i, bot.model, bot.tokenizer, self.pending, self.max_batch))
            for w in self.workers:
                w.start()
        except Exception as e:
            self.error = str(e)
        finally:
            self._loaded.set()

    def _device_for(self, index: int) -> torch.device:
        device = pick_device(self.device)
        if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
            return torch.device("cuda", index % torch.cuda.device_count())
        return device

    def submit(self, job: Job) -> None:
        try:
            self.pending.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; in-flight jobs end with an error event, so their streams close cleanly."""
        for w in self.workers:
            w.stop()  # each worker fails its in-flight jobs as it exits
        while True:
            try:
                self.pending.get_nowait().send(Failed("the server is shutting down"))
            except queue.Empty:
                break
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
                    "active_requests": w.active,
                    "max_batch": w.max_batch,
                    "requests_served": w.requests_served,
                    "tokens_served": w.tokens_served,
                }
                for w in self.workers
            ],
        }
