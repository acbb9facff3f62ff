"""Relevance feedback as data: per collection, which indexed images were relevant to a query
and which were not, kept with the query's vector (search_service.feedback_space) so that it can
be listed, exported, deleted - and used by later searches.

Judging an image the collection does not hold is refused NOT_FOUND, whole: a judgement of
nothing cannot steer a search, and DeleteImages' clean-up could never find it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from imagesearch.errors import InvalidArgument, NotFound, ResourceExhausted
from search_service import compose
from search_service import feedback_space as space
from search_service import validation as check
from search_service.core import SearchCore
from search_service.domain import (
    CollectionRecord,
    FeedbackRecord,
    Outcome,
    Problem,
    Query,
    StoredImage,
)

MAX_DESCRIPTION = 1000


async def record(core: SearchCore, collection: str, query: Query, relevant: Sequence[str],
                 not_relevant: Sequence[str], remaining: float | None = None
                 ) -> tuple[list[str], int]:
    """Records one judgement per image; returns their ids and how many the collection holds
    now. Refused whole, before any write, for any bad id, unknown image or the bound."""
    judged = check.check_judgements(relevant, not_relevant)
    if query.feedback is not None:
        raise InvalidArgument("record the query itself, not one refined by feedback")
    target = await core.store.get_collection(check.check_collection_name(collection))
    await _check_held(core, target, judged)
    vector = await _vector(core, target, query, remaining)
    ids = [space.row_id(i, vector) for i in judged]
    total = await space.count(core.store, target)
    new = len(ids) - len(await core.store.get(space.of(target), ids))
    if total + new > check.MAX_FEEDBACK:
        raise ResourceExhausted(
            f"collection {collection!r} holds {total} feedback judgements; {new} more would "
            f"pass the limit of {check.MAX_FEEDBACK}: delete some first")
    await core.store.upsert(space.of(target), ids, np.stack([vector] * len(ids)),
                            _metadata(query, judged, len(relevant)))
    # Again after the write: a DeleteImages that ran since the check found no row to clean up.
    gone = set(judged) - {image.external_id
                                   for image in await core.store.get(target, judged)}
    if gone:
        await core.store.delete(space.of(target), [space.row_id(i, vector) for i in gone])
        raise NotFound(f"images {', '.join(repr(i[:80]) for i in sorted(gone)[:10])} were "
                       f"deleted from collection {target.name!r} while being judged: their "
                       "judgements were not kept (those of the others were)")
    return ids, total + new


async def _check_held(core: SearchCore, target: CollectionRecord, judged: list[str]) -> None:
    held = {image.external_id for image in await core.store.get(target, judged)}
    missing = [i for i in judged if i not in held]
    if missing:
        raise NotFound(f"images {', '.join(repr(i[:80]) for i in missing[:10])}"
                       f"{' ...' if len(missing) > 10 else ''} are not in collection "
                       f"{target.name!r}: nothing was recorded")


async def _vector(core: SearchCore, target: CollectionRecord, query: Query,
                  remaining: float | None) -> np.ndarray:
    # The query as embedded, not as the collection's adaptation maps it: the adaptation is
    # fit on these vectors.
    (vector,) = await core.query_vectors(target, [query], remaining, adapt=False)
    if isinstance(vector, Outcome):
        error = NotFound if vector.problem is Problem.NOT_FOUND else InvalidArgument
        raise error(f"query: {vector.message}")
    return vector


def _metadata(query: Query, judged: list[str], relevant: int) -> list[dict[str, object]]:
    kind, description = describe(query)
    now = int(time.time() * 1000)
    return [{space.IMAGE_KEY: image_id, space.RELEVANT_KEY: position < relevant,
             space.KIND_KEY: kind, space.QUERY_KEY: description, space.TIME_KEY: now}
            for position, image_id in enumerate(judged)]


def describe(query: Query) -> tuple[str, str]:
    """The query's kind, and its description in words (see FeedbackRecord)."""
    if query.parts is not None:
        words = " + ".join(f"{p.weight:g}*{compose.kind(p.query)}:{_words(p.query)}"
                           for p in query.parts)
        return "compound", _clipped(words)
    return str(compose.kind(query)), _clipped(_words(query))


def _words(query: Query) -> str:
    return query.text if query.text is not None else query.image_id or ""


def _clipped(words: str) -> str:
    return words if len(words) <= MAX_DESCRIPTION else words[:MAX_DESCRIPTION - 1] + "…"


async def listed(core: SearchCore, collection: str, size: int, token: str,
                 include_vectors: bool = False) -> tuple[list[FeedbackRecord], str]:
    """A page of the collection's judgements, grouped by judged image."""
    limit, after = check.page_size(size), check.decode_token(token)
    target = await core.store.get_collection(check.check_collection_name(collection))
    rows = await core.store.list_images(space.of(target), limit, after, include_vectors)
    page = [_record_of(row) for row in rows]
    return page, check.encode_token(rows[-1].external_id) if len(rows) == limit else ""


def _record_of(row: StoredImage) -> FeedbackRecord:
    meta = row.metadata
    return FeedbackRecord(row.external_id, str(meta.get(space.IMAGE_KEY, "")),
                          bool(meta.get(space.RELEVANT_KEY)), str(meta.get(space.KIND_KEY, "")),
                          str(meta.get(space.QUERY_KEY, "")), int(meta.get(space.TIME_KEY, 0)),
                          row.vector)


async def delete(core: SearchCore, collection: str, ids: Sequence[str] = (),
                 image_ids: Sequence[str] = (), everything: bool = False) -> None:
    """By feedback id, by judged image, or all: exactly one. Ids not recorded are ignored."""
    if (bool(ids) + bool(image_ids) + everything) != 1:
        raise InvalidArgument("give exactly one of ids, image_ids and all")
    wanted = (check.check_feedback_ids(ids) if ids
              else check.check_ids(image_ids) if image_ids else [])
    target = await core.store.get_collection(check.check_collection_name(collection))
    if everything:
        await space.delete(core.store, target, await space.every_row(core.store, target))
    elif ids:
        await space.delete(core.store, target, wanted)
    else:
        await space.forget_images(core.store, target, wanted)


async def count(core: SearchCore, target: CollectionRecord) -> int:
    return await space.count(core.store, target)


async def carry(core: SearchCore, source: CollectionRecord, target: CollectionRecord
                ) -> tuple[int, int]:
    """Records the judgements kept under `source` again under `target` (another model's space,
    for a migration) where their query can be embedded again - a text kept whole, an indexed
    image - and returns how many were carried and how many could not be (images and vectors
    sent as queries, compound queries, clipped texts: their vectors belong to the old model)."""
    after, carried, left = "", 0, 0
    while rows := await core.store.list_images(space.of(source), check.MAX_PAGE, after):
        after = rows[-1].external_id
        judged = [_record_of(row) for row in rows]
        texts = [r for r in judged if r.query_kind == "text"
                 and not r.query_description.endswith("…")]
        by_id = [r for r in judged if r.query_kind == "image_id"]
        left += len(judged) - len(texts) - len(by_id)
        vectors: dict[str, np.ndarray] = {}
        if texts:
            embedded = await core.embed_texts(target, [r.query_description for r in texts], None)
            for r, v in zip(texts, embedded, strict=True):
                if not isinstance(v, Outcome):
                    vectors[r.id] = v
        if by_id:
            found = {i.external_id: i.vector for i in await core.store.get(
                target, sorted({r.query_description for r in by_id}), True)}
            for r in by_id:
                vector = found.get(r.query_description)
                if vector is not None:
                    vectors[r.id] = vector
        keep = [(r, vectors[r.id]) for r in judged if r.id in vectors]
        left += len(texts) + len(by_id) - len(keep)
        if keep:
            await core.store.upsert(
                space.of(target), [space.row_id(r.image_id, v) for r, v in keep],
                np.stack([v for _, v in keep]),
                [{space.IMAGE_KEY: r.image_id, space.RELEVANT_KEY: r.relevant,
                  space.KIND_KEY: r.query_kind, space.QUERY_KEY: r.query_description,
                  space.TIME_KEY: r.recorded_at_ms} for r, _ in keep])
        carried += len(keep)
    return carried, left
