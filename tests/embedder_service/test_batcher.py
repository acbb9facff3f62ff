"""Dynamic batching: coalescing, limits, failure isolation, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from embedder_service.batcher import DynamicBatcher
from embedder_service.errors import ModelNotReady


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on: object = None) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
        time.sleep(self.delay)
        if self.fail_on in items:
            raise RuntimeError("model exploded")
        return [item * 10 for item in items]


async def _batcher(run: Recorder, **options) -> DynamicBatcher[int, int]:
    settings = {"max_batch_size": 8, "max_delay_s": 0.02, **options}
    batcher: DynamicBatcher[int, int] = DynamicBatcher("test", run, **settings)
    batcher.start()
    return batcher


async def test_concurrent_items_share_one_model_call():
    run = Recorder()
    batcher = await _batcher(run)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1, 2, 3, 4]]
    await batcher.close()


async def test_batches_never_exceed_the_max_size():
    run = Recorder(delay=0.01)
    batcher = await _batcher(run, max_batch_size=4)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(18)))
    assert results == [i * 10 for i in range(18)]
    assert max(len(b) for b in run.batches) == 4
    assert sorted(i for b in run.batches for i in b) == list(range(18))
    await batcher.close()


async def test_lone_item_waits_at_most_the_queue_delay():
    batcher = await _batcher(Recorder(), max_delay_s=0.05)
    started = time.perf_counter()
    assert await batcher.submit(3) == 30
    assert time.perf_counter() - started < 0.5
    await batcher.close()


async def test_items_arriving_while_the_model_runs_form_the_next_batch():
    run = Recorder(delay=0.1)
    batcher = await _batcher(run, max_delay_s=0.0)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.03)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.gather(first, *rest)
    assert run.batches == [[0], [1, 2, 3, 4, 5]]
    await batcher.close()


async def test_failed_model_call_fails_only_its_batch():
    run = Recorder(fail_on=2)
    batcher = await _batcher(run, max_batch_size=2, max_delay_s=0.0)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(4)),
                                    return_exceptions=True)
    assert outcomes[0] == 0 and outcomes[1] == 10
    assert all(isinstance(o, RuntimeError) for o in outcomes[2:])
    assert await batcher.submit(5) == 50
    await batcher.close()


async def test_cancelled_items_are_not_computed():
    run = Recorder(delay=0.1)
    batcher = await _batcher(run, max_batch_size=1, max_delay_s=0.0)
    running = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.02)
    doomed = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert await running == 10
    await asyncio.sleep(0.15)
    assert [2] not in run.batches
    await batcher.close()


async def test_close_fails_waiting_items_as_unavailable():
    run = Recorder(delay=0.1)
    batcher = await _batcher(run, max_batch_size=1, max_delay_s=0.0)
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0.02)
    await batcher.close()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert outcomes[0] == 0
    assert any(isinstance(o, ModelNotReady) for o in outcomes[1:])
    with pytest.raises(ModelNotReady):
        await batcher.submit(9)
