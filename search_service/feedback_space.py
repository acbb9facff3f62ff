"""Where a collection's recorded relevance feedback is kept: one row per judgement in a space of
its own under the collection's key, as the copy index and the class names are
(search_service.copy_index): made on first use, deleted with the collection.

A row's vector is the judged query's vector, so the feedback nearest a new query is one
nearest-neighbour search. Its id is the judged image's id, '/', then a digest of the query
vector: ids never hold '/', so the rows naming an image are one contiguous run of the space's
id order - found by one ordered read from "image/", not by scanning every row - and judging an
image again for the same query replaces its row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from search_service import validation as check
from search_service.domain import CollectionRecord, ModelSpace
from search_service.ports import VectorStore

IMAGE_KEY, RELEVANT_KEY, KIND_KEY, QUERY_KEY, TIME_KEY = "image", "relevant", "kind", "query", "t"


def of(record: CollectionRecord) -> CollectionRecord:
    """The record under which a collection's feedback is kept: a space per model, so feedback
    made with one model never mixes with another's."""
    seed = "\n".join([record.model.fingerprint, "feedback"])
    space = ModelSpace("sha256:" + hashlib.sha256(seed.encode()).hexdigest(),
                       record.model.dimension, f"feedback on {record.model.model_name}")
    return replace(record, model=space)


def row_id(image_id: str, query: np.ndarray) -> str:
    digest = hashlib.sha256(query.astype(np.float32).tobytes()).hexdigest()[:32]
    return f"{image_id}/{digest}"


def image_of(feedback_id: str) -> str:
    return feedback_id.rpartition("/")[0]


async def count(store: VectorStore, record: CollectionRecord) -> int:
    (total,) = await store.counts([of(record)])
    return total


async def rows_of(store: VectorStore, record: CollectionRecord, image_ids: Sequence[str]
                  ) -> list[str]:
    """The ids of the judgements of `image_ids`, by whichever read is cheaper: one ordered read
    per image, or one pass over every row when there are fewer pages of rows than images."""
    wanted = set(image_ids)
    if not wanted:
        return []
    total = await count(store, record)
    if total == 0:
        return []
    if -(-total // check.MAX_PAGE) <= len(wanted):
        return [i for i in await every_row(store, record) if image_of(i) in wanted]
    return [i for image_id in sorted(wanted) for i in await _run_of(store, record, image_id)]


async def _run_of(store: VectorStore, record: CollectionRecord, image_id: str) -> list[str]:
    prefix, after, found = image_id + "/", image_id + "/", []
    while True:
        page = await store.list_images(of(record), check.MAX_PAGE, after, False, False)
        run = [row.external_id for row in page if row.external_id.startswith(prefix)]
        found += run
        if len(run) < check.MAX_PAGE:
            return found
        after = run[-1]


async def every_row(store: VectorStore, record: CollectionRecord) -> list[str]:
    found: list[str] = []
    while True:
        page = await store.list_images(of(record), check.MAX_PAGE, found[-1] if found else "",
                                       False, False)
        found += [row.external_id for row in page]
        if len(page) < check.MAX_PAGE:
            return found


async def delete(store: VectorStore, record: CollectionRecord, ids: Sequence[str]) -> None:
    for start in range(0, len(ids), check.MAX_IDS):
        await store.delete(of(record), ids[start:start + check.MAX_IDS])


async def forget_images(store: VectorStore, record: CollectionRecord,
                        image_ids: Sequence[str]) -> None:
    """Deletes the feedback naming deleted images: a judgement of an image the collection no
    longer has would steer searches toward, or away from, nothing."""
    await delete(store, record, await rows_of(store, record, image_ids))
