"""The copy index beside each collection: every image's index hash (imagesearch.copies.index)
as a vector in a space of its own, in the same vector store, under the collection's key.

It finds the candidates that the embedding ranks too low to verify - copies framed in a
screenshot, watermarked or turned a little. A store keeps a record's rows per model space
(search_service.ports.VectorStore), so the index is the collection's record with the index's
space: created, searched and deleted with the collection, nothing to migrate. Images added
before the index existed have no row in it and are found through the embedding alone;
adding them again fills it in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from imagesearch.copies import index
from imagesearch.copies import signal as signals
from imagesearch.copies.signal import CopySignal
from search_service.domain import CollectionRecord, ModelSpace
from search_service.ports import VectorStore

SPACE = ModelSpace("sha256:" + hashlib.sha256(index.SPACE.encode()).hexdigest(), index.BITS,
                   index.SPACE)
# FindDuplicates verifies this many of the index's nearest, beside the embedding's
# (bench/copy_index_eval.py: framed, watermarked and rotated copies rank within 6 of 490).
CANDIDATES = 32


def of(record: CollectionRecord) -> CollectionRecord:
    """The record under which a collection's index rows are kept."""
    return replace(record, model=SPACE)


def rows(items: Sequence[tuple[str, bytes | None]]
         ) -> tuple[list[str], np.ndarray | None, list[str]]:
    """(ids, their index vectors) of the images whose signal reads, and the ids of those
    without one (an embedder older than copy signals), whose rows would describe other
    pixels."""
    hashed, vectors, unhashed = [], [], []
    for image_id, signal in items:
        decoded = signals.decoded(signal)
        if decoded is None:
            unhashed.append(image_id)
        else:
            hashed.append(image_id)
            vectors.append(index.vector(index.hashes(decoded)[0]))
    return hashed, (np.stack(vectors) if vectors else None), unhashed


async def add(store: VectorStore, record: CollectionRecord,
              items: Sequence[tuple[str, bytes | None]]) -> None:
    """Indexes each image's signal; an image without one loses any row it had."""
    hashed, vectors, unhashed = rows(items)
    if vectors is not None:
        await store.upsert(of(record), hashed, vectors, [{}] * len(hashed))
    if unhashed:
        await store.delete(of(record), unhashed)


async def nearest(store: VectorStore, record: CollectionRecord, signal: CopySignal,
                  limit: int = CANDIDATES) -> list[str]:
    """The ids whose index hash is nearest to the image's or to its mirror image's."""
    plain, mirrored = index.hashes(signal)
    found = await store.search(of(record), np.stack([index.vector(plain),
                                                     index.vector(mirrored)]), limit)
    best: dict[str, float] = {}
    for hit in (h for hits in found for h in hits):
        best[hit.external_id] = max(hit.similarity, best.get(hit.external_id, -1.0))
    return sorted(best, key=lambda i: -best[i])[:limit]


async def delete(store: VectorStore, record: CollectionRecord, ids: Sequence[str]) -> None:
    await store.delete(of(record), ids)

