"""One worker: a thread that decodes every job it holds together, one token per job per step.

Continuous batching over a per-row KV cache: a new job is prefilled on its own and dropped into a free
row; each step then feeds the next token of every active row through the model at once, so concurrent
chats share the cost of reading the weights. Rows leave as soon as they finish or their client goes away.

While rows are decoding, new prompts are prefilled at most PREFILL_CHUNK tokens between two decode steps
(one long prompt in several chunks, or several short ones together), so a stream never waits longer
between two tokens than one chunk's prefill takes; an idle worker prefills a prompt in one go.

Each row samples with its own settings and its own generator (penalties make a new tensor, never writing into
the batch's logits); rows without penalties whose settings are the same share one top-k and softmax and then
draw each with its own generator, the tokens they would draw alone. Logprobs come from the raw logits, before
any sampling control.

A failure that belongs to one row (sampling, its text, its prefill) ends that row only. Before taking any
job the worker runs a warm-up step (a prefill and one decode step), so "ready" means the model has really
run on this thread; the heartbeat shows the pool a worker that stopped making progress.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import torch

from ..engine import Sequence
from ..errors import NanochatError
from ..kv_cache import KVCache
from ..model import GPT
from ..sampling import TokenHistory, sample_next, sample_rows
from ..tokenizer import Tokenizer
from .job import Failed, Finished, Job, PromptLogprobs
from .job_queue import JobQueue
from .logprobs import prompt_logprobs, token_logprob
from .reply import ReplyText

log = logging.getLogger("nanochat_py.server")
SHUTTING_DOWN = "the server is shutting down; retry on another instance or after it restarts"
PREFILL_CHUNK = 256  # prompt tokens prefilled between two decode steps of the running rows


class _Prefill:
    """A job whose prompt is being prefilled, chunk by chunk, into a cache of its own."""

    def __init__(self, job: Job):
        self.job = job
        self.cache: KVCache | None = None
        self.done = 0  # prompt tokens already in the cache
        self.logits: list[torch.Tensor] = []  # every position's (prompt logprobs), else the last one's


class _Row:
    def __init__(self, job: Job, tokenizer: Tokenizer, device: torch.device, vocab_size: int):
        self.job = job
        self.sequence = Sequence(tokenizer, use_tools=not job.raw)
        self.reply = ReplyText(tokenizer, job.stops, raw=job.raw)
        self.history = TokenHistory(job.prompt, 1, vocab_size, device) if job.penalties.active else None
        self.generator = torch.Generator(device=device)
        seed = job.seed if job.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.generator.manual_seed(seed)
        self.next_input = 0  # the token this row feeds at the next step
        self.generated = 0


class Worker:
    def __init__(self, index: int, model: GPT, tokenizer: Tokenizer, pending: JobQueue, max_batch: int,
                 on_exit: Callable[[Worker], None] = lambda worker: None):  # fmt: skip
        self.index = index
        self.model = model
        self.tokenizer = tokenizer
        self.pending = pending
        self.max_batch = max_batch
        self.context_len = model.config.sequence_len
        _check_cache_fits(model, max_batch, self.context_len)
        self.slots = model.new_cache(max_batch, self.context_len, per_row=True)
        self.rows: list[_Row | None] = [None] * max_batch
        self.tokens_served = 0
        self.requests_served = 0
        self.heartbeat = time.monotonic()  # the last time the loop made progress
        self.warmed_up = threading.Event()  # set once the warm-up step has run (or failed: see warm_up_error)
        self.warm_up_error: str | None = None
        self._admitting: _Prefill | None = None
        self._on_exit = on_exit
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"nanochat-worker-{index}", daemon=True)

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def active(self) -> int:
        return sum(r is not None for r in self.rows)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def heartbeat_age(self) -> float:
        return time.monotonic() - self.heartbeat

    def stalled(self, after: float) -> bool:
        """No progress for `after` seconds although there is work (an idle worker beats every 50 ms anyway)."""
        has_work = self.active or self._admitting is not None or self.pending.qsize()
        return bool(has_work) and self.heartbeat_age() > after

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    # --- the loop ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                if self._warm_up():
                    self._serve()
        finally:  # however the thread ends (even by a BaseException), nobody is left waiting on it
            if not self._stop.is_set():
                log.error("worker %d stopped unexpectedly; /health reports it", self.index)
            self._fail_all(Failed(SHUTTING_DOWN, 503) if self._stop.is_set() else
                           Failed(f"worker {self.index} stopped; retry shortly", 503))  # fmt: skip
            self.warmed_up.set()
            self._on_exit(self)

    def _warm_up(self) -> bool:
        """A prefill and one batched decode step on this thread, through the same paths requests take."""
        try:
            cache = self.model.new_cache(1, 2)
            ids = torch.tensor([[self.tokenizer.bos_token_id]], dtype=torch.long, device=self.model.device)
            logits = self.model(ids, cache=cache, last_only=True)[:, -1]
            self.slots.load_row(0, cache)
            column = logits.argmax(dim=-1, keepdim=True)
            self.model(column, cache=self.slots.rows(1), last_only=True)
            self.slots.row_pos[0] = 0
        except Exception as e:
            log.exception("worker %d failed its warm-up step", self.index)
            self.warm_up_error = f"worker {self.index} could not run the model: {type(e).__name__}: {e}"
            return False
        self.heartbeat = time.monotonic()
        self.warmed_up.set()
        return True

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self._admit()
                if self.active:
                    self._step()
            except Exception as e:  # the batch's forward pass failed: fail its jobs, keep serving
                log.exception("worker %d failed a decode step", self.index)
                self._fail_all(Failed(f"internal error: {type(e).__name__}"))

    def _admit(self) -> None:
        """Prefill waiting jobs into free rows: PREFILL_CHUNK prompt tokens at most while rows are decoding
        (waiting briefly for a job when idle)."""
        budget = None  # no limit while no row is waiting for its next token
        while True:
            if budget is None and self.active:
                budget = PREFILL_CHUNK
            if budget is not None and budget <= 0:
                return
            if self._admitting is None:
                job = self._next_job()
                if job is None:
                    return
                self._admitting = _Prefill(job)  # in no row yet: if the thread dies now, _fail_all still ends it
            prefill = self._admitting
            try:
                budget = self._prefill_chunk(prefill, budget)
            except Exception as e:  # only this job is lost; the batch goes on
                log.exception("worker %d could not start a request", self.index)
                self._admitting = None
                self._fail_row(prefill.job, e)
            self.heartbeat = time.monotonic()

    def _next_job(self) -> Job | None:
        """The next waiting job, if a row is free for it."""
        while None in self.rows:
            job = self.pending.get(timeout=0 if self.active else 0.05)
            if job is None or not job.cancelled:
                return job
        return None

    def _prefill_chunk(self, prefill: _Prefill, budget: int | None) -> int | None:
        """Feed the next part of a prompt (all of it, with no budget); once it is all in, the job takes its
        row. Returns the budget left."""
        job, prompt = prefill.job, prefill.job.prompt
        if job.cancelled:
            self._admitting = None
            return budget
        if not job.max_tokens and job.prompt_logprobs is None:  # echo alone: no forward pass is needed
            self._admitting = None
            self._finish_echo(job)
            return budget
        if prefill.cache is None:
            job.worker = self.index
            prefill.cache = self.model.new_cache(1, len(prompt))
        end = len(prompt) if budget is None else min(len(prompt), prefill.done + budget)
        ids = torch.tensor([prompt[prefill.done : end]], dtype=torch.long, device=self.model.device)
        if job.prompt_logprobs is not None:  # every position's logits, to score the prompt itself
            prefill.logits.append(self.model(ids, cache=prefill.cache)[0])
        else:
            prefill.logits = [self.model(ids, cache=prefill.cache, last_only=True)[0]]
        budget = None if budget is None else budget - (end - prefill.done)
        prefill.done = end
        if end == len(prompt):
            self._admitting = None
            self._start(prefill)
        return budget

    def _start(self, prefill: _Prefill) -> None:
        """A prefilled job: send its prompt logprobs if asked, then give it a row and its first token."""
        job, logits = prefill.job, torch.cat(prefill.logits)
        if job.prompt_logprobs is not None:
            job.send(PromptLogprobs(prompt_logprobs(logits, job.prompt, job.prompt_logprobs)))
        if not job.max_tokens:
            return self._finish_echo(job)
        slot = self.rows.index(None)
        row = _Row(job, self.tokenizer, self.model.device, self.model.config.vocab_size)
        self.slots.load_row(slot, prefill.cache)
        self.rows[slot] = row
        self._emit(slot, row, logits[-1:])

    def _finish_echo(self, job: Job) -> None:
        """A job that asked for its prompt alone (echo, max_tokens 0) ends without taking a row."""
        self.requests_served += 1
        job.send(Finished("length", len(job.prompt), 0))

    def _step(self) -> None:
        """Feed every active row its next token; rows past the last active one are not computed at all."""
        last = max(i for i, r in enumerate(self.rows) if r is not None) + 1
        column = torch.tensor(
            [[r.next_input if r is not None else 0] for r in self.rows[:last]], device=self.model.device
        )
        logits = self.model(column, cache=self.slots.rows(last), last_only=True)[:, -1]
        sampled = self._sample_together(logits)
        for i, row in enumerate(self.rows[:last]):
            if row is None:
                self.slots.row_pos[i] = 0  # an empty row took part in the step; it holds nothing
                continue
            try:
                self._emit(i, row, logits[i : i + 1], sampled.get(i))
            except Exception as e:  # this row's sampling or text failed: end it alone
                log.exception("worker %d failed one request", self.index)
                self._fail_row(row.job, e)

    def _sample_together(self, logits: torch.Tensor) -> dict[int, int]:
        """The next token of each row without penalties, drawn together with the rows of the same settings (one
        top-k for 16 rows costs about what 5 cost one by one); the same tokens each row would draw alone. A
        group that fails is left out, so that each of its rows samples, and fails, on its own."""
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(self.rows[: len(logits)]):
            if row is not None and not row.job.cancelled and row.history is None:
                job = row.job
                groups.setdefault((job.temperature, job.top_k, job.top_p, job.min_p), []).append(i)
        sampled: dict[int, int] = {}
        for settings, slots in groups.items():
            if len(slots) < 2:
                continue
            contiguous = slots[-1] - slots[0] + 1 == len(slots)
            rows = slice(slots[0], slots[-1] + 1) if contiguous else slots  # a view of the logits, not a copy
            try:
                tokens = sample_rows(logits[rows], [self.rows[i].generator for i in slots], *settings)
            except Exception:  # noqa: BLE001 - reported by each row's own sampling
                continue
            sampled.update(zip(slots, tokens.tolist(), strict=True))
        return sampled

    def _emit(self, slot: int, row: _Row, logits: torch.Tensor, sampled: int | None = None) -> None:
        """Choose this row's next token (unless sampled already), send its text, and free the row when the job
        is over."""
        job = row.job
        if job.cancelled:
            return self._finish(slot, "cancelled")
        if sampled is None:
            adjusted = row.history.penalize(logits, job.penalties) if row.history is not None else logits
            sampled = int(sample_next(adjusted, row.generator, job.temperature, job.top_k, job.top_p, job.min_p)[0])
        token, _ = row.sequence.next_token(sampled)
        row.sequence.feed(token)
        if row.history is not None:
            row.history.add([token])
        if row.sequence.done:
            return self._finish(slot, "stop")
        row.generated += 1
        self.tokens_served += 1
        row.next_input = token
        delta = row.reply.add(token)
        if job.logprobs is not None:
            delta.logprob = token_logprob(logits[0], token, job.logprobs)
        job.send(delta)
        if row.reply.stopped:  # an OpenAI stop string: the reply ends here
            return self._finish(slot, "stop")
        if row.generated >= job.max_tokens or int(self.slots.row_pos[slot]) >= self.context_len:
            self._finish(slot, "length")

    def _release(self, slot: int) -> _Row:
        row, self.rows[slot] = self.rows[slot], None
        self.slots.row_pos[slot] = 0
        return row

    def _finish(self, slot: int, reason: str) -> None:
        row = self._release(slot)
        self.requests_served += 1
        if reason != "cancelled" and not row.reply.stopped:
            tail = row.reply.close()
            if tail.pieces or tail.text:
                row.job.send(tail)
        row.job.send(Finished(reason, len(row.job.prompt), row.generated))

    def _fail_row(self, job: Job, error: Exception) -> None:
        """End one job with an error, freeing its row if it has one."""
        for slot, row in enumerate(self.rows):
            if row is not None and row.job is job:
                self._release(slot)
        job.send(Failed(f"internal error: {type(error).__name__}"))

    def _fail_all(self, failure: Failed) -> None:
        jobs = [self._release(slot).job for slot, row in enumerate(self.rows) if row is not None]
        if self._admitting is not None and self._admitting.job not in jobs:
            jobs.append(self._admitting.job)
        self._admitting = None
        for job in jobs:
            job.send(failure)


def _check_cache_fits(model: GPT, rows: int, context: int) -> None:
    """Refuse a batch cache larger than the memory free for it, before allocating it: a model whose meta
    claims a huge context would otherwise send the machine into swap or the OOM killer."""
    cfg = model.config
    needed = 2 * cfg.n_layer * rows * cfg.n_kv_head * cfg.head_dim * context * model.kv_dtype.itemsize
    free = _free_memory(model.device)
    if free is not None and needed > 0.9 * free:
        raise NanochatError(
            f"the KV cache for {rows} concurrent requests at the model's {context:,}-token context needs "
            f"{needed / 2**30:,.1f} GiB, more than the {free / 2**30:,.1f} GiB free on {model.device}; "
            f"serve fewer at once with --max-batch (each takes {needed / rows / 2**30:,.2f} GiB)"
        )


def _free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device`, where the platform says."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
