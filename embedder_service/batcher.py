"""Server-side dynamic batching: items from concurrent requests share one model call.

Each item waits in a queue with its own future. A collector takes the first waiting item, then
keeps taking items until the batch is full or `max_delay_s` has passed since the first arrived,
and hands the batch to the model on a worker thread (ONNX Runtime releases the GIL). At most
`max_inflight` batches run at once; while they do, new items pile up and form the next batch,
so batches grow by themselves under load and stay small (low latency) when traffic is light.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from embedder_service.errors import ModelNotReady

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    payload: In
    future: asyncio.Future[Out]
    enqueued: float = field(default_factory=time.perf_counter)


class BatchObserver:
    """Receives batch statistics (metrics); the default ignores them."""

    def batch_done(self, name: str, size: int, queue_waits: list[float], run_s: float) -> None:
        pass


class DynamicBatcher(Generic[In, Out]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_inflight: int = 1,
        max_queue: int = 8192,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self._max_batch = max_batch_size
        self._max_delay = max_delay_s
        self._queue: asyncio.Queue[_Pending[In, Out]] = asyncio.Queue(max_queue)
        self._slots = asyncio.Semaphore(max_inflight)
        # One thread per in-flight batch: model calls are the only work done here.
        self._executor = ThreadPoolExecutor(max_inflight, thread_name_prefix=f"batch-{name}")
        self._observer = observer or BatchObserver()
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        # Start times of the model calls running now, for the stall watchdog.
        self._calls: dict[int, float] = {}

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def longest_call_s(self) -> float:
        """How long the oldest model call running now has been running; 0 when none is."""
        if not self._calls:
            return 0.0
        return time.perf_counter() - min(self._calls.values())

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(self._collect_forever())

    async def close(self) -> None:
        """Stops taking batches; items still queued fail with UNAVAILABLE."""
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ModelNotReady("the embedder is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, payload: In) -> Out:
        if self._collector is None or self._collector.done():
            raise ModelNotReady("the embedder is not running")
        pending: _Pending[In, Out] = _Pending(payload, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        return await pending.future

    async def _collect_forever(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect_one()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _collect_one(self) -> list[_Pending[In, Out]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self._max_delay
        while len(batch) < self._max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        try:
            # Callers that gave up (deadline, cancellation) need no compute.
            live = [p for p in batch if not p.future.done()]
            if not live:
                return
            started = time.perf_counter()
            waits = [started - p.enqueued for p in live]
            loop = asyncio.get_running_loop()
            self._calls[id(batch)] = started
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self._run_batch, [p.payload for p in live])
            except Exception as err:  # one failed model call fails its items, not the server
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(err)
                return
            finally:
                del self._calls[id(batch)]
            self._observer.batch_done(self.name, len(live), waits, time.perf_counter() - started)
            for pending, output in zip(live, outputs, strict=True):
                if not pending.future.done():
                    pending.future.set_result(output)
        finally:
            self._slots.release()
