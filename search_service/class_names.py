"""Zero-shot classes: a collection's class names, kept as text embeddings beside its images.

Each name becomes the mean of its prompts' text embeddings, normalised - a prompt ensemble, as
CLIP's zero-shot classifiers are built - and is kept in a space of its own under the
collection's key, as the copy index is (search_service.copy_index): made on first use, deleted
with the collection, and searched through the store's vector index, so a query against 100k
names is one nearest-neighbour search, not a scan. The space's fingerprint is derived from the
model's and from the prompts, so vectors made by another model or another prompt set never mix
with these: the embeddings are cached per collection and per model fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from imagesearch.errors import InvalidArgument, ResourceExhausted
from search_service import validation as check
from search_service.core import SearchCore
from search_service.domain import CollectionRecord, Embedding, ModelSpace, Outcome

# Averaged per name. Varied wording makes the vector the name's, not one sentence's (CLIP's
# ensembles gain 1-5 points this way); these four are the phrasings the bundled model was
# trained on (imagesearch.synthetic.caption) and CLIP's commonest.
PROMPTS = ("a photo of a {}", "a {}", "an image of a {}", "a picture of a {}")
# The nearest names scored per query: with the temperature below, a name this far down the
# ranking has a negligible share (a cosine 0.05 below the best is e^-5 of its weight).
CANDIDATES = 16
# CLIP's logit scale (1 / temperature): turns cosines into a softmax over names.
LOGIT_SCALE = 100.0
NAME_KEY = "name"


def of(record: CollectionRecord) -> CollectionRecord:
    """The record under which a collection's class names are kept."""
    seed = "\n".join([record.model.fingerprint, "class-names", *PROMPTS])
    space = ModelSpace("sha256:" + hashlib.sha256(seed.encode()).hexdigest(),
                       record.model.dimension, f"class names of {record.model.model_name}")
    return replace(record, model=space)


def row_id(name: str) -> str:
    """A name's row id: names may hold characters ids may not ('/')."""
    return "n" + hashlib.sha256(name.encode()).hexdigest()[:40]


async def add(core: SearchCore, collection: str, names: Sequence[str],
              remaining: float | None = None) -> int:
    """Embeds and keeps `names` (again, for those already kept); returns how many the
    collection holds now. Refused whole, before any write, if it would pass the bound."""
    wanted = check.check_class_names(names)
    record = await _for_write(core, collection)
    held = await _held(core, record, wanted)
    if held.total + held.new > check.MAX_CLASS_NAMES:
        raise ResourceExhausted(
            f"collection {collection!r} holds {held.total} class names; {held.new} more would "
            f"pass the limit of {check.MAX_CLASS_NAMES}: delete some first")
    vectors = await embed_names(core, record, wanted, remaining)
    await core.store.upsert(of(record), [row_id(n) for n in wanted], vectors,
                            [{NAME_KEY: n} for n in wanted])
    return held.total + held.new


async def carry(core: SearchCore, source: CollectionRecord, target: CollectionRecord) -> int:
    """Embeds the class names kept under `source` again under `target` (another model's
    space, for a migration); returns how many."""
    after, carried = "", 0
    while rows := await core.store.list_images(of(source), check.MAX_CLASS_NAMES_PER_CALL,
                                               after):
        names = [str(row.metadata[NAME_KEY]) for row in rows]
        vectors = await embed_names(core, target, names, None)
        await core.store.upsert(of(target), [row_id(n) for n in names], vectors,
                                [{NAME_KEY: n} for n in names])
        carried += len(names)
        after = rows[-1].external_id
    return carried


async def _for_write(core: SearchCore, collection: str) -> CollectionRecord:
    """The record read now, never the read paths' cached one: no write lands in a collection
    deleted a moment ago."""
    return await core.store.get_collection(check.check_collection_name(collection))


class _Held:
    def __init__(self, total: int, new: int) -> None:
        self.total, self.new = total, new


async def _held(core: SearchCore, record: CollectionRecord, names: list[str]) -> _Held:
    (total,) = await core.store.counts([of(record)])
    present = await core.store.get(of(record), [row_id(n) for n in names])
    return _Held(total, len(names) - len(present))


async def embed_names(core: SearchCore, record: CollectionRecord, names: list[str],
                      remaining: float | None) -> np.ndarray:
    """Each name's prompt-ensemble vector in the space of `record.model`; InvalidArgument
    naming the first name that cannot be embedded."""
    return _ensembles(names, await core.embed_texts(
        record, [p.format(n) for n in names for p in PROMPTS], remaining))


def _ensembles(names: list[str], embedded: list[Embedding]) -> np.ndarray:
    """Per name, the normalised mean of its prompts' vectors."""
    for index, embedding in enumerate(embedded):
        if isinstance(embedding, Outcome):
            raise InvalidArgument(f"class name {names[index // len(PROMPTS)][:40]!r} cannot "
                                  f"be embedded: {embedding.message}")
    stacked = np.stack(embedded).reshape(len(names), len(PROMPTS), -1).mean(axis=1)  # type: ignore[arg-type]
    normalised: np.ndarray = (stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
                              ).astype(np.float32)
    return normalised


async def listed(core: SearchCore, collection: str, size: int, token: str
                 ) -> tuple[list[str], str]:
    """A page of the collection's class names (in a stable order, not alphabetical)."""
    limit, after = check.page_size(size), check.decode_token(token)
    record = await core.collection(collection)
    rows = await core.store.list_images(of(record), limit, after)
    page = [str(row.metadata[NAME_KEY]) for row in rows]
    return page, check.encode_token(rows[-1].external_id) if len(rows) == limit else ""


async def delete(core: SearchCore, collection: str, names: Sequence[str]) -> None:
    """Names not kept are ignored."""
    wanted = check.check_class_names(names)
    record = await _for_write(core, collection)
    await core.store.delete(of(record), [row_id(n) for n in wanted])


async def count(core: SearchCore, record: CollectionRecord) -> int:
    (total,) = await core.store.counts([of(record)])
    return total


async def scores(core: SearchCore, record: CollectionRecord, vectors: Sequence[Embedding],
                 top: int) -> list[dict[str, float]]:
    """Per query vector, its `top` nearest names with a softmax share each (CLIP's zero-shot
    probabilities over those names); {} for a query without a vector."""
    found = await core.nearest(of(record), vectors, top)
    return [softmax({str(h.metadata[NAME_KEY]): h.similarity for h in hits}) for hits in found]


def softmax(similarities: dict[str, float]) -> dict[str, float]:
    if not similarities:
        return {}
    logits = LOGIT_SCALE * np.asarray(list(similarities.values()), dtype=np.float64)
    weights = np.exp(logits - logits.max())
    return dict(zip(similarities, (weights / weights.sum()).tolist(), strict=True))
