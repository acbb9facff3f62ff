"""Bulk ingest: a stream of images in, one acknowledgement per image out, in order.

Three stages overlap: a reader takes images off the stream into a bounded queue (the client's
back-pressure); a batcher groups them by size, or after a short delay so a client that waits
for each acknowledgement still progresses; up to `max_inflight` batches are embedded and
written at once. An acknowledgement is sent only after its image is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from search_service.core import SearchCore
from search_service.domain import NewImage, Outcome, refused

BATCH = 64
DELAY_S = 0.02
MAX_INFLIGHT = 3
# How long an ended stream waits for its helpers to stop before answering anyway.
ABANDON_S = 1.0
_END = object()


@dataclass(frozen=True)
class IngestItem:
    collection: str
    image: NewImage


async def _read(items: AsyncIterator[IngestItem], queue: asyncio.Queue[object]) -> None:
    try:
        async for item in items:
            await queue.put(item)
        await queue.put(_END)
    except Exception as err:  # a broken request stream ends the call with its error
        await queue.put(err)


async def _next_batch(queue: asyncio.Queue[object]) -> tuple[list[IngestItem], object]:
    """Up to BATCH items, waiting at most DELAY_S after the first; plus any end marker."""
    first = await queue.get()
    if not isinstance(first, IngestItem):
        return [], first
    batch, deadline = [first], asyncio.get_running_loop().time() + DELAY_S
    while len(batch) < BATCH:
        timeout = deadline - asyncio.get_running_loop().time()
        try:
            item = await asyncio.wait_for(queue.get(), max(timeout, 0))
        except TimeoutError:
            break
        if not isinstance(item, IngestItem):
            return batch, item
        batch.append(item)
    return batch, None


async def _store(core: SearchCore, collection: str,
                 batch: list[IngestItem]) -> list[Outcome]:
    same = [item.collection == collection for item in batch]
    images = [item.image for item, ok in zip(batch, same, strict=True) if ok]
    outcomes = await core.add_images(collection, images) if images else []
    answers = iter(outcomes)
    return [next(answers) if ok else refused(
        "all images of one stream must go to the same collection") for ok in same]


@dataclass(frozen=True)
class InFlight:
    batch: list[IngestItem]
    task: asyncio.Task[list[Outcome]]


Entry = InFlight | object  # or _END, or the exception that ended the stream


async def ingest(core: SearchCore,
                 items: AsyncIterator[IngestItem]) -> AsyncIterator[tuple[str, Outcome]]:
    """Acknowledgements in stream order. A batch that fails (a dependency down) ends the
    stream with its error at once; whatever else is in flight is cancelled, never awaited
    beyond that."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(BATCH * (MAX_INFLIGHT + 1))
    # Batches in flight, oldest first, then _END or the error that ended the stream.
    running: asyncio.Queue[Entry] = asyncio.Queue(MAX_INFLIGHT)
    reader = loop.create_task(_read(items, queue))
    batcher = loop.create_task(_batches(core, queue, running))
    try:
        while (entry := await running.get()) is not _END:
            if not isinstance(entry, InFlight):
                raise entry  # type: ignore[misc]
            for item, status in zip(entry.batch, await entry.task, strict=True):
                yield item.image.id, status
    finally:
        await _abandon(reader, batcher, running)


async def _abandon(reader: asyncio.Task[None], batcher: asyncio.Task[None],
                   running: asyncio.Queue[Entry]) -> None:
    """Stops the helpers and the batches still running. The stream's answer does not wait for
    them: a reader blocked in gRPC's request read may not see its cancellation until the call
    is torn down, which happens only once this returns."""
    tasks: list[asyncio.Future[Any]] = [reader, batcher]
    while not running.empty():
        entry = running.get_nowait()
        if isinstance(entry, InFlight):
            tasks.append(entry.task)
    for task in tasks:
        task.cancel()
        # Their outcomes are collected whenever they end (a batch that already failed is
        # not an error to log again).
        task.add_done_callback(_collect)
    await asyncio.wait(tasks, timeout=ABANDON_S)


def _collect(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _batches(core: SearchCore, queue: asyncio.Queue[object],
                   running: asyncio.Queue[Entry]) -> None:
    collection = ""  # the stream's: its first item's
    try:
        while True:
            batch, marker = await _next_batch(queue)
            if batch:
                collection = collection or batch[0].collection
                task = asyncio.get_running_loop().create_task(_store(core, collection, batch))
                await running.put(InFlight(batch, task))
            if marker is not None:
                await running.put(marker)  # _END, or the request stream's error
                return
    except asyncio.CancelledError:
        raise  # the consumer is gone: nothing to tell it
    except Exception as err:  # a bug here must end the stream, not hang it
        await running.put(err)
