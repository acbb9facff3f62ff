"""Prometheus metrics of the embedder's batching (RPC metrics come from the interceptor)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from embedder_service.batcher import BatchObserver

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LABELS = ("model", "tower")
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class EmbedderMetrics:
    """Batch metrics labelled by model and tower; queue depth and the longest model call over
    every model (what the watchdog and autoscaling look at)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_size = Histogram("embedder_batch_size", "Items per model call.", _LABELS,
                                    buckets=_SIZE_BUCKETS, registry=registry)
        self.queue_seconds = Histogram("embedder_queue_wait_seconds",
                                       "Time an item waited for its batch to start.", _LABELS,
                                       buckets=_TIME_BUCKETS, registry=registry)
        self.model_seconds = Histogram("embedder_model_seconds", "Duration of one model call.",
                                       _LABELS, buckets=_TIME_BUCKETS, registry=registry)
        self.items = Counter("embedder_items", "Items embedded (rate() gives items per second).",
                             _LABELS, registry=registry)
        self.queue_depth = Gauge("embedder_queue_depth", "Items waiting for a model call.",
                                 registry=registry)
        self.longest_call = Gauge("embedder_longest_model_call_seconds",
                                  "How long the oldest model call running now has been at it.",
                                  registry=registry)

    def for_model(self, model_name: str) -> BatchObserver:
        """The observer one model's batchers report to."""
        return _ModelObserver(self, model_name)

    def batch_done(self, model: str, tower: str, size: int, queue_waits: list[float],
                   run_s: float) -> None:
        self.batch_size.labels(model, tower).observe(size)
        self.model_seconds.labels(model, tower).observe(run_s)
        self.items.labels(model, tower).inc(size)
        waits = self.queue_seconds.labels(model, tower)
        for wait in queue_waits:
            waits.observe(wait)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def track_longest_call(self, seconds: Callable[[], float]) -> None:
        self.longest_call.set_function(seconds)


class _ModelObserver(BatchObserver):
    def __init__(self, metrics: EmbedderMetrics, model_name: str) -> None:
        self._metrics = metrics
        self._model = model_name

    def batch_done(self, name: str, size: int, queue_waits: list[float], run_s: float) -> None:
        self._metrics.batch_done(self._model, name, size, queue_waits, run_s)
