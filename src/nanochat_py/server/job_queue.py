"""The bounded queue of jobs waiting for a worker row.

Unlike queue.Queue, a job can leave from the middle: a client that gives up while waiting frees its place at
once instead of holding it until a worker would have taken the job.
"""

from __future__ import annotations

import threading
from collections import deque

from .job import Job


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows."""


class JobQueue:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._jobs: deque[Job] = deque()
        self._changed = threading.Condition()

    def put(self, job: Job) -> None:
        with self._changed:
            if len(self._jobs) >= self.maxsize:
                raise QueueFull
            self._jobs.append(job)
            self._changed.notify()

    def get(self, timeout: float = 0.0) -> Job | None:
        """The oldest job, waiting up to `timeout` seconds for one; None if there is none."""
        with self._changed:
            if timeout > 0:
                self._changed.wait_for(lambda: self._jobs, timeout)
            return self._jobs.popleft() if self._jobs else None

    def remove(self, job: Job) -> None:
        with self._changed:
            try:
                self._jobs.remove(job)  # O(queue length), and the queue is bounded by --max-queue
            except ValueError:
                pass  # a worker took it already

    def drain(self) -> list[Job]:
        with self._changed:
            jobs, self._jobs = list(self._jobs), deque()
            return jobs

    def qsize(self) -> int:
        return len(self._jobs)
