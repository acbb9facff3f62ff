"""Prometheus metrics of the embedder's batching (RPC metrics come from the interceptor)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from embedder_service.batcher import BatchObserver

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class EmbedderMetrics(BatchObserver):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_size = Histogram("embedder_batch_size", "Items per model call.", ["tower"],
                                    buckets=_SIZE_BUCKETS, registry=registry)
        self.queue_seconds = Histogram("embedder_queue_wait_seconds",
                                       "Time an item waited for its batch to start.", ["tower"],
                                       buckets=_TIME_BUCKETS, registry=registry)
        self.model_seconds = Histogram("embedder_model_seconds", "Duration of one model call.",
                                       ["tower"], buckets=_TIME_BUCKETS, registry=registry)
        self.items = Counter("embedder_items", "Items embedded (rate() gives items per second).",
                             ["tower"], registry=registry)
        self.queue_depth = Gauge("embedder_queue_depth", "Items waiting for a model call.",
                                 registry=registry)
        self.longest_call = Gauge("embedder_longest_model_call_seconds",
                                  "How long the oldest model call running now has been at it.",
                                  registry=registry)

    def batch_done(self, name: str, size: int, queue_waits: list[float], run_s: float) -> None:
        self.batch_size.labels(name).observe(size)
        self.model_seconds.labels(name).observe(run_s)
        self.items.labels(name).inc(size)
        waits = self.queue_seconds.labels(name)
        for wait in queue_waits:
            waits.observe(wait)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def track_longest_call(self, seconds: Callable[[], float]) -> None:
        self.longest_call.set_function(seconds)
