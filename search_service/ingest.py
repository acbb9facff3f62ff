"""Bulk ingest: a stream of images in, one acknowledgement per image out, in order.

Three stages overlap: a reader takes images off the stream into a bounded queue (the client's
back-pressure); a batcher groups them by size, or after a short delay so a client that waits
for each acknowledgement still progresses; up to `max_inflight` batches are embedded and
written at once. An acknowledgement is sent only after its image is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from search_service.core import INVALID_ARGUMENT, ItemStatus, NewImage, SearchCore

BATCH = 64
DELAY_S = 0.02
MAX_INFLIGHT = 3
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
                 batch: list[IngestItem]) -> list[ItemStatus]:
    same = [item.collection == collection for item in batch]
    images = [item.image for item, ok in zip(batch, same, strict=True) if ok]
    statuses = await core.add_images(collection, images) if images else []
    answers = iter(statuses)
    return [next(answers) if ok else ItemStatus(
        INVALID_ARGUMENT, "all images of one stream must go to the same collection")
        for ok in same]


async def ingest(core: SearchCore,
                 items: AsyncIterator[IngestItem]) -> AsyncIterator[tuple[str, ItemStatus]]:
    queue: asyncio.Queue[object] = asyncio.Queue(BATCH * (MAX_INFLIGHT + 1))
    reader = asyncio.get_running_loop().create_task(_read(items, queue))
    running: asyncio.Queue[tuple[list[IngestItem], asyncio.Task[list[ItemStatus]]] | None] = (
        asyncio.Queue(MAX_INFLIGHT))
    batcher = asyncio.get_running_loop().create_task(_batches(core, queue, running))
    try:
        while (entry := await running.get()) is not None:
            batch, task = entry
            for item, status in zip(batch, await task, strict=True):
                yield item.image.id, status
        await batcher  # re-raises a stream error found by the reader
    finally:
        for helper in (reader, batcher):
            helper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await helper


async def _batches(core: SearchCore, queue: asyncio.Queue[object],
                   running: asyncio.Queue[tuple[list[IngestItem],
                                                asyncio.Task[list[ItemStatus]]] | None]) -> None:
    marker: object = None
    collection = ""  # the stream's: its first item's
    try:
        while marker is None:
            batch, marker = await _next_batch(queue)
            if batch:
                collection = collection or batch[0].collection
                task = asyncio.get_running_loop().create_task(_store(core, collection, batch))
                await running.put((batch, task))
    finally:
        await running.put(None)
    if isinstance(marker, BaseException):
        raise marker
