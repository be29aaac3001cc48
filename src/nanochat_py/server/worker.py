"""One worker: a thread that decodes every job it holds together, one token per job per step.

Continuous batching over a per-row KV cache: a new job is prefilled on its own and dropped into a free
row; each step then feeds the next token of every active row through the model at once, so concurrent
chats share the cost of reading the weights. Rows leave as soon as they finish or their client goes away.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

import torch

from ..engine import Sequence
from ..model import GPT
from ..sampling import sample_next
from ..tokenizer import Tokenizer
from .job import Failed, Finished, Job, Token

log = logging.getLogger("nanochat_py.server")


class _Row:
    def __init__(self, job: Job, tokenizer: Tokenizer, device: torch.device):
        self.job = job
        self.sequence = Sequence(tokenizer)
        self.generator = torch.Generator(device=device)
        seed = job.seed if job.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.generator.manual_seed(seed)
        self.next_input = 0  # the token this row feeds at the next step
        self.generated = 0


class Worker:
    def __init__(self, index: int, model: GPT, tokenizer: Tokenizer, pending: queue.Queue, max_batch: int):
        self.index = index
        self.model = model
        self.tokenizer = tokenizer
        self.pending = pending
        self.max_batch = max_batch
        self.context_len = model.config.sequence_len
        self.slots = model.new_cache(max_batch, self.context_len, per_row=True)
        self.rows: list[_Row | None] = [None] * max_batch
        self.tokens_served = 0
        self.requests_served = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"nanochat-worker-{index}", daemon=True)

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def active(self) -> int:
        return sum(r is not None for r in self.rows)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    # --- the loop ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    self._admit()
                    if self.active:
                        self._step()
                except Exception as e:  # a bug must not kill the worker: fail its jobs, keep serving
                    log.exception("worker %d failed a decode step", self.index)
                    self._fail_all(f"internal error: {type(e).__name__}")
            self._fail_all("the server is shutting down")

    def _admit(self) -> None:
        """Take waiting jobs into free rows (waiting briefly for one when idle)."""
        while None in self.rows:
            try:
                job = self.pending.get(timeout=0.05) if not self.active else self.pending.get_nowait()
            except queue.Empty:
                return
            if job.cancelled:
                continue
            try:
                self._prefill(self.rows.index(None), job)
            except Exception as e:  # only this job is lost; the batch goes on
                log.exception("worker %d could not start a request", self.index)
                job.send(Failed(f"internal error: {type(e).__name__}"))

    def _prefill(self, slot: int, job: Job) -> None:
        job.worker = self.index
        row = _Row(job, self.tokenizer, self.model.device)
        cache = self.model.new_cache(1, len(job.prompt))
        ids = torch.tensor([job.prompt], dtype=torch.long, device=self.model.device)
        logits = self.model(ids, cache=cache, last_only=True)[:, -1]
        self.slots.load_row(slot, cache)
        self.rows[slot] = row
        self._emit(slot, row, logits)

    def _step(self) -> None:
        """Feed every active row its next token; rows past the last active one are not computed at all."""
        last = max(i for i, r in enumerate(self.rows) if r is not None) + 1
        column = torch.tensor(
            [[r.next_input if r is not None else 0] for r in self.rows[:last]], device=self.model.device
        )
        logits = self.model(column, cache=self.slots.rows(last), last_only=True)[:, -1]
        for i, row in enumerate(self.rows[:last]):
            if row is None:
                self.slots.row_pos[i] = 0  # an empty row took part in the step; it holds nothing
            else:
                self._emit(i, row, logits[i : i + 1])

    def _emit(self, slot: int, row: _Row, logits: torch.Tensor) -> None:
        """Choose this row's next token, send it, and free the row when the job is over."""
        job = row.job
        if job.cancelled:
            return self._finish(slot, "cancelled")
        sampled = int(sample_next(logits, row.generator, job.temperature, job.top_k, job.top_p)[0])
        token, forced = row.sequence.next_token(sampled)
        row.sequence.feed(token)
        if row.sequence.done:
            return self._finish(slot, "stop")
        job.send(Token(token, forced))
        row.generated += 1
        self.tokens_served += 1
        row.next_input = token
        if row.generated >= job.max_tokens or int(self.slots.row_pos[slot]) >= self.context_len:
            self._finish(slot, "length")

    def _release(self, slot: int) -> _Row:
        row, self.rows[slot] = self.rows[slot], None
        self.slots.row_pos[slot] = 0
        return row

    def _finish(self, slot: int, reason: str) -> None:
        row = self._release(slot)
        self.requests_served += 1
        row.job.send(Finished(reason, len(row.job.prompt), row.generated))

    def _fail_all(self, message: str) -> None:
        for slot, row in enumerate(self.rows):
            if row is not None:
                self._release(slot).job.send(Failed(message))
