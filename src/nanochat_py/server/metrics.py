"""Prometheus metrics of one server process (its own registry, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self, pool):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("nanochat_requests", "HTTP requests by route and status code", ["route", "code"],
                                registry=r)  # fmt: skip
        self.errors = Counter("nanochat_errors", "HTTP responses with a 4xx/5xx status", ["code"], registry=r)
        self.prompt_tokens = Counter("nanochat_prompt_tokens", "prompt tokens processed", registry=r)
        self.completion_tokens = Counter("nanochat_completion_tokens", "tokens generated", registry=r)
        self.ttft = Histogram("nanochat_time_to_first_token_seconds", "queue + prefill time until the first token",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)  # fmt: skip
        self.tokens_per_second = Histogram("nanochat_decode_tokens_per_second", "decode speed of each request",
                                           buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r)  # fmt: skip
        Gauge("nanochat_queue_depth", "requests waiting for a worker", registry=r).set_function(
            lambda: pool.pending.qsize()
        )
        Gauge("nanochat_active_requests", "requests being generated", registry=r).set_function(
            lambda: sum(w.active for w in pool.workers)
        )

    def observe_request(self, route: str, code: int) -> None:
        self.requests.labels(route, str(code)).inc()
        if code >= 400:
            self.errors.labels(str(code)).inc()

    def observe_job(self, job, finished) -> None:
        self.prompt_tokens.inc(finished.prompt_tokens)
        self.completion_tokens.inc(finished.completion_tokens)
        if job.first_token_at is not None:
            self.ttft.observe(job.first_token_at - job.created)

    def observe_speed(self, tokens: int, seconds: float) -> None:
        if tokens > 1 and seconds > 0:
            self.tokens_per_second.observe((tokens - 1) / seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
