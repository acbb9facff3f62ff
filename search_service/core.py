"""The search core: collections, images and nearest-neighbour queries, over two ports - a
VectorStore and an Embedder (search_service.ports) - and nothing else: no gRPC, no Milvus.

Every request is validated (search_service.validation) before any work. Every call that
embeds checks the embedder's model fingerprint against the collection's before anything is
written or searched: vector spaces never mix.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from imagesearch.errors import FailedPrecondition, InvalidArgument
from search_service import (
    adaptation_fit,
    adaptation_space,
    compose,
    copy_index,
    cutoff,
    feedback_space,
)
from search_service import validation as check
from search_service.domain import (
    DONE,
    Collection,
    CollectionRecord,
    Condition,
    Embedding,
    Hit,
    Kept,
    MigrationState,
    ModelSpace,
    NewImage,
    Outcome,
    Problem,
    Query,
    QueryResult,
    ServedModel,
    StoredImage,
    refused,
)
from search_service.errors import ModelMismatch, ModelNotServed
from search_service.ports import Embedder, ImageStore, VectorStore

# The image store's kind for what copy detection keeps of each image: the SHA-256 of its
# bytes, then its encoded copy signal (none when the embedder made none).
COPY_KIND = "copy"
THUMBNAIL_KIND = "thumb"
# What an image is embedded again from (migration to another model, evaluation of models).
PIXELS_KIND = "pixels"
# Every kind the core keeps in the image store (what a move to another store carries).
IMAGE_KINDS = (COPY_KIND, THUMBNAIL_KIND, PIXELS_KIND)
# Thumbnails kept of each image added: big enough for a results page on a high-DPI screen.
THUMBNAIL_SIDE = 256


@dataclass(frozen=True)
class PixelPolicy:
    """What the image store keeps to embed an image again: "normalized" (a JPEG the embedder
    makes from its decode, at most `side` pixels on the longer side), "original" (the bytes as
    sent), or "off" (nothing: the collection cannot move to another model)."""

    keep: str = "normalized"
    side: int = 448

    @property
    def embedder_side(self) -> int:
        return self.side if self.keep == "normalized" else 0


@dataclass(frozen=True)
class CopyRecord:
    digest: bytes
    signal: bytes | None


class SearchCore:
    def __init__(self, store: VectorStore, embedder: Embedder, record_ttl_s: float = 2.0,
                 images: ImageStore | None = None, pixels: PixelPolicy = PixelPolicy()) -> None:
        self.store = store
        self.pixels = pixels
        # Where copy signals are kept; None: the service keeps none (duplicates by
        # similarity only).
        self.images = images
        self._embedder = embedder
        # Read paths (search, duplicates, classify) reuse a collection's registry record for
        # a moment instead of a Milvus round trip per call; writes always re-read it, so no
        # instance ever writes into a collection another one has just deleted.
        self._records: dict[str, tuple[float, CollectionRecord]] = {}
        self._record_ttl = record_ttl_s
        # Bumped by every create and delete of a name here: a read that began before one
        # must not put the record it fetched back into the cache after it.
        self._generations: dict[str, int] = {}
        # Each collection's enabled query adaptation (search_service.adaptation).
        self.adaptations = adaptation_space.Cache()

    async def sweep(self) -> list[str]:
        """Removes what late writes left of deleted collections - rows, and the image store's
        records of images added while their collection was being deleted; returns the keys."""
        keys = await self.store.sweep()
        if self.images is not None:
            for key in keys:
                await self.images.delete_collection(key)
        return keys

    async def close(self) -> None:
        await self.store.close()
        if self.images is not None:
            await self.images.close()

    async def collection(self, name: str) -> CollectionRecord:
        """The record for a read path, from the short-lived cache when fresh."""
        cached = self._records.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._record_ttl:
            return cached[1]
        generation = self._generations.get(name, 0)
        record = await self._fresh(name)
        if self._generations.get(name, 0) == generation:
            self._records[name] = (now, record)
        return record

    def forget(self, name: str) -> None:
        """Drops the cached record of `name` (after a write to it)."""
        self._forget(name)

    def _forget(self, name: str) -> None:
        self._generations[name] = self._generations.get(name, 0) + 1
        self._records.pop(name, None)

    async def _fresh(self, name: str) -> CollectionRecord:
        """The record read from the store now (writes always use this)."""
        return await self.store.get_collection(check.check_collection_name(name))

    # Collections -------------------------------------------------------------------------

    async def create_collection(self, name: str, description: str,
                                remaining: float | None = None, model_name: str = "",
                                ) -> Collection:
        check.check_collection_name(name)
        check.check_description(description)
        model = await self.served_model(model_name, remaining)
        self._forget(name)
        made = await self.store.create_collection(name, model, description)
        self._forget(name)  # reads that began during the creation saw the old state
        return Collection(made, 0)

    async def served_model(self, name: str, remaining: float | None = None) -> ModelSpace:
        """The space of the served model `name` names ("" the primary); NOT_FOUND if none."""
        check.check_model_name(name)
        return await self._embedder.model(remaining, name)

    async def served_models(self, remaining: float | None = None) -> list[ServedModel]:
        return await self._embedder.models(remaining)

    async def get_collection(self, name: str) -> Collection:
        record = await self._fresh(name)
        (count,) = await self.store.counts([record])
        return Collection(record, count)

    async def list_collections(self, size: int, token: str,
                               visible: Callable[[str], bool] = lambda name: True,
                               ) -> tuple[list[Collection], str]:
        """A page of the collections `visible` allows. The store is read on past the others
        until the page is full, and the token names only a shown collection, so neither the
        page sizes nor the tokens tell a caller anything about collections it may not see."""
        limit, after = check.page_size(size), check.decode_token(token)
        shown: list[CollectionRecord] = []
        while len(shown) < limit:
            records = await self.store.list_collections(limit, after)
            shown += [r for r in records if visible(r.name)][:limit - len(shown)]
            if len(records) < limit:
                break  # the end of the collections
            after = records[-1].name
        counts = await self.store.counts(shown)
        page = [Collection(r, c) for r, c in zip(shown, counts, strict=True)]
        return page, check.encode_token(shown[-1].name) if len(shown) == limit else ""

    async def delete_collection(self, name: str) -> None:
        check.check_collection_name(name)
        self._forget(name)
        try:
            record = await self._fresh(name) if self.images is not None else None
            await self.store.delete_collection(name)
        finally:
            self._forget(name)
        if record is not None and self.images is not None:
            await self.images.delete_collection(record.key)

    # Images ------------------------------------------------------------------------------

    async def add_images(self, name: str, images: Sequence[NewImage],
                         remaining: float | None = None) -> list[Outcome]:
        check.check_count("images", len(images), check.MAX_BATCH)
        outcomes = _validate_new(images)
        record = await self._fresh(name)
        valid = [i for i, outcome in enumerate(outcomes) if outcome.ok]
        if not valid:
            return outcomes
        data = [images[i].data for i in valid]
        shadow = record.shadow
        # During a migration each image is embedded by both models before anything is
        # written: an image lands in both spaces or in neither.
        (embedded, kept), twins = await asyncio.gather(
            self._embed_for_keeping(record, data, remaining),
            self._embed_shadow(record, data, remaining) if shadow else _nothing())
        stored = []
        for at, (index, embedding, extras) in enumerate(zip(valid, embedded, kept, strict=True)):
            twin = twins[at] if shadow is not None else None
            if isinstance(embedding, Outcome):
                outcomes[index] = embedding
            elif isinstance(twin, Outcome):
                assert shadow is not None
                outcomes[index] = Outcome(twin.problem, (
                    f"collection {record.name!r} is moving to model {shadow.model.model_name}, "
                    f"which refused this image: {twin.message}"))
            else:
                stored.append((index, embedding, extras, twin))
        if stored and self.images is not None:
            # Before the vectors: an image searchable as a copy candidate has its record.
            await self._keep(record, [(images[i], extras) for i, _, extras, _ in stored])
        if stored:
            ids = [images[i].id for i, _, _, _ in stored]
            metadata = [check.check_metadata(images[i].metadata) for i, _, _, _ in stored]
            await self.store.upsert(record, ids, np.stack([v for _, v, _, _ in stored]),
                                    metadata)
            if shadow is not None:
                twins_kept = [t for _, _, _, t in stored if t is not None]
                await self.store.upsert(shadow, ids, np.stack(twins_kept), metadata)
        if stored and self.images is not None:
            # After the vectors: an index row never names an image the collection lacks,
            # and an image whose row failed is still found through its embedding.
            await copy_index.add(self.store, record, [(images[i].id, extras.copy_signal)
                                                      for i, _, extras, _ in stored])
        return outcomes

    async def _embed_shadow(self, record: CollectionRecord, data: Sequence[bytes],
                            remaining: float | None) -> list[Embedding]:
        """The images' vectors in the space a migration keeps current besides the
        collection's own; a model the embedder does not serve fails the write with what to do
        about the migration (not "move the collection", which it is already doing)."""
        shadow, migration = record.shadow, record.migration
        assert shadow is not None
        assert migration is not None
        try:
            return await self.embed_images(shadow, data, remaining)
        except ModelMismatch as err:
            other = f"{shadow.model.model_name} ({shadow.model.fingerprint})"
            if migration.state is MigrationState.SWITCHED:
                advice = (f"collection {record.name!r} has switched to model "
                          f"{record.model.model_name} and keeps the vectors of model {other} "
                          "current until its migration's grace period ends, but the embedder "
                          "does not serve that model now. Serve it again "
                          "(EMBEDDER_EXTRA_BUNDLES), or end the grace period "
                          "(FinishMigration) to write to the new model alone")
            else:
                advice = (f"collection {record.name!r} is moving to model {other}, and every "
                          "write lands in both models until the switch, but the embedder does "
                          "not serve that model now. Serve it again (EMBEDDER_EXTRA_BUNDLES), "
                          "or cancel the migration (CancelMigration)")
            raise ModelMismatch(advice) from err

    async def _embed_for_keeping(self, record: CollectionRecord, data: Sequence[bytes],
                                 remaining: float | None) -> tuple[list[Embedding], list[Kept]]:
        """Vectors in the collection's space, with what the image store keeps of each."""
        if self.images is None:
            return await self.embed_images(record, data, remaining), [Kept()] * len(data)
        with _served(record):
            fingerprint, embedded, kept = await self._embedder.embed_images_signed(
                data, remaining, THUMBNAIL_SIDE, record.model.fingerprint,
                self.pixels.embedder_side)
        self._check_model(record, fingerprint)
        return embedded, kept

    async def embed_images(self, record: CollectionRecord, data: Sequence[bytes],
                           remaining: float | None) -> list[Embedding]:
        """Images' vectors in the space of `record.model` (the model checked first)."""
        with _served(record):
            fingerprint, embedded = await self._embedder.embed_images(
                data, remaining, record.model.fingerprint)
        self._check_model(record, fingerprint)
        return embedded

    async def _keep(self, record: CollectionRecord, kept: list[tuple[NewImage, Kept]]) -> None:
        """Each image's copy record (the SHA-256 of its bytes, then its signal) and thumbnail.
        An image added again without a thumbnail (an older embedder) gets an empty one, not
        the old one, which would show other pixels."""
        assert self.images is not None
        await self.images.put(record.key, COPY_KIND, [
            (image.id, hashlib.sha256(image.data).digest() + (extras.copy_signal or b""))
            for image, extras in kept])
        await self.images.put(record.key, THUMBNAIL_KIND, [
            (image.id, extras.thumbnail or b"") for image, extras in kept])
        if self.pixels.keep != "off":
            # An empty record where the embedder made none: never an older image's pixels.
            await self.images.put(record.key, PIXELS_KIND, [
                (image.id, image.data if self.pixels.keep == "original"
                 else extras.pixels or b"") for image, extras in kept])

    async def kept_pixels(self, record: CollectionRecord, ids: Sequence[str]
                          ) -> dict[str, bytes]:
        """What can be embedded again of each of `ids` that has it."""
        if self.images is None or not ids:
            return {}
        found = await self.images.get(record.key, PIXELS_KIND, ids)
        return {i: data for i, data in found.items() if data}

    async def get_thumbnails(self, name: str, ids: Sequence[str]
                             ) -> tuple[dict[str, bytes], list[str]]:
        """The JPEG thumbnails kept of `ids`, and the ids that have none (unknown, or added
        before thumbnails were kept)."""
        wanted = check.check_ids(ids)
        record = await self.collection(name)
        if self.images is None:
            raise FailedPrecondition("this service keeps no thumbnails (SEARCH_IMAGE_STORE is "
                                     "off)")
        found = {i: data for i, data in (await self.images.get(
            record.key, THUMBNAIL_KIND, wanted)).items() if data}
        return found, [i for i in wanted if i not in found]

    async def copy_records(self, record: CollectionRecord, ids: Sequence[str]
                           ) -> dict[str, CopyRecord]:
        """What copy detection kept of each of `ids` that has it."""
        if self.images is None or not ids:
            return {}
        found = await self.images.get(record.key, COPY_KIND, ids)
        return {i: CopyRecord(data[:32], data[32:] or None) for i, data in found.items()}

    async def query_copy_record(self, record: CollectionRecord, query: Query,
                                remaining: float | None) -> tuple[Embedding, CopyRecord | None]:
        """A duplicate query's vector and copy record (None where there is none)."""
        if query.image is None or self.images is None:
            (vector,) = await self.query_vectors(record, [query], remaining)
            copy = None
            if query.image_id is not None and not isinstance(vector, Outcome):
                copy = (await self.copy_records(record, [query.image_id])).get(query.image_id)
            return vector, copy
        with _served(record):
            fingerprint, (vector,), (kept,) = await self._embedder.embed_images_signed(
                [query.image], remaining, model=record.model.fingerprint)
        self._check_model(record, fingerprint)
        return vector, CopyRecord(hashlib.sha256(query.image).digest(), kept.copy_signal)

    async def get_images(self, name: str, ids: Sequence[str], include_vectors: bool
                         ) -> tuple[list[StoredImage], list[str]]:
        wanted = check.check_ids(ids)
        record = await self._fresh(name)
        found = await self.store.get(record, wanted, include_vectors)
        present = {image.external_id for image in found}
        return found, [i for i in wanted if i not in present]

    async def list_images(self, name: str, size: int, token: str
                          ) -> tuple[list[StoredImage], str]:
        limit, after = check.page_size(size), check.decode_token(token)
        record = await self._fresh(name)
        images = await self.store.list_images(record, limit, after)
        return images, check.encode_token(images[-1].external_id) if len(images) == limit else ""

    async def scan(self, record: CollectionRecord, limit: int, after: str) -> list[StoredImage]:
        """A page of the collection's ids and vectors (no metadata), for whole-collection
        work."""
        return await self.store.list_images(record, limit, after, True, False)

    async def delete_images(self, name: str, ids: Sequence[str]) -> None:
        wanted = check.check_ids(ids)
        record = await self._fresh(name)
        await self.store.delete(record, wanted)
        if record.shadow is not None:
            # After the collection's own space: a migration's copy that read an image before
            # this finds it gone when it checks, and deletes its copy.
            await self.store.delete(record.shadow, wanted)
        if self.images is not None:
            await copy_index.delete(self.store, record, wanted)
            await self.images.delete(record.key, wanted)
        await feedback_space.forget_images(self.store, record, wanted)

    # Queries -----------------------------------------------------------------------------

    async def search(self, name: str, queries: Sequence[Query], top_k: int,
                     min_similarity: float, conditions: Sequence[Condition],
                     remaining: float | None = None,
                     cut: cutoff.Cutoff = cutoff.Cutoff.NONE) -> list[QueryResult]:
        check.check_count("queries", len(queries), check.MAX_QUERIES)
        limit, filters = check.check_top_k(top_k), check.check_conditions(conditions)
        check.check_similarity(min_similarity)
        record = await self.collection(name)
        towers: list[tuple[str, ...]] = []
        vectors = await self.query_vectors(record, queries, remaining, towers)
        # Feedback examples left out of the hits: ask for that many more, then drop them.
        excluded = [q.feedback.excluded if q.feedback else frozenset() for q in queries]
        hits = await self.nearest(record, vectors, limit + max(map(len, excluded)), filters,
                                  min_similarity)
        return [QueryResult([], v) if isinstance(v, Outcome)
                else QueryResult(cutoff.apply(cut, [h for h in found
                                                    if h.external_id not in out][:limit]),
                                 text_towers=used)
                for v, found, out, used in zip(vectors, hits, excluded, towers, strict=True)]

    async def nearest(self, record: CollectionRecord, vectors: Sequence[Embedding], top_k: int,
                      conditions: tuple[Condition, ...] = (),
                      min_similarity: float = -1.0) -> list[list[Hit]]:
        """The hits of each query vector in one store call ([] for those that have none)."""
        ready = [i for i, v in enumerate(vectors) if not isinstance(v, Outcome)]
        out: list[list[Hit]] = [[] for _ in vectors]
        if ready:
            batch = np.stack([vectors[i] for i in ready])  # type: ignore[misc]
            found = await self.store.search(record, batch, top_k, conditions, min_similarity)
            for index, hits in zip(ready, found, strict=True):
                out[index] = hits
        return out

    async def query_vectors(self, record: CollectionRecord, queries: Sequence[Query],
                            remaining: float | None,
                            towers: list[tuple[str, ...]] | None = None,
                            adapt: bool = True) -> list[Embedding]:
        """Each query's unit vector, or the outcome saying why it has none. The atoms of
        every query - parts of compound queries and feedback examples too - are embedded
        together: one embedder call per kind, one store read for every indexed image. Text
        atoms go through the collection's enabled adaptation unless `adapt` is False or their
        query skips it."""
        plans = [compose.plan(query) for query in queries]
        atoms = [atom for p in plans if isinstance(p, compose.Plan) for atom in p.atoms]
        mapped = [adapt and not p.query.skip_adaptation
                  for p in plans if isinstance(p, compose.Plan) for _ in p.atoms]
        atom_towers = [""] * len(atoms)
        vectors = iter(await self._atom_vectors(record, atoms, remaining, atom_towers, mapped))
        used = iter(atom_towers)
        folded: list[Embedding] = []
        for p in plans:
            if isinstance(p, Outcome):
                folded.append(p)
                if towers is not None:
                    towers.append(())
                continue
            folded.append(p.fold([next(vectors) for _ in p.atoms], record.name))
            if towers is not None:
                towers.append(tuple(t for t in (next(used) for _ in p.atoms) if t))
            else:
                for _ in p.atoms:
                    next(used)
        return folded

    async def _atom_vectors(self, record: CollectionRecord, queries: Sequence[Query],
                            remaining: float | None,
                            towers: list[str] | None = None,
                            adapt: Sequence[bool] | None = None) -> list[Embedding]:
        """Each single-kind query's unit vector, or the outcome saying why it has none;
        `towers` gets the text tower of each text query ("" for the others); the texts
        `adapt` marks (all when None) go through the collection's adaptation."""
        out: list[Embedding] = [refused(compose.EMPTY)] * len(queries)
        picked = [i for i, q in enumerate(queries) if q.image is not None]
        if picked:
            embedded = await self.embed_images(
                record, [queries[i].image for i in picked], remaining)  # type: ignore[misc]
            for i, embedding in zip(picked, embedded, strict=True):
                out[i] = embedding
        await self._texts(record, queries, out, towers, remaining)
        await self._adapt(record, queries, out, adapt)
        await self._stored_vectors(record, queries, out)
        for i, query in enumerate(queries):
            if query.vector is not None:
                out[i] = _raw_vector(query.vector, record.model.dimension)
        return out

    async def _texts(self, record: CollectionRecord, queries: Sequence[Query],
                     out: list[Embedding], towers: list[str] | None,
                     remaining: float | None) -> None:
        """The text queries' vectors, one embedder call per language: a language no tower
        serves fails its own queries, not the others'."""
        by_language: dict[str, list[int]] = {}
        for i, query in enumerate(queries):
            if query.text is not None:
                by_language.setdefault(query.language, []).append(i)
        for language, picked in by_language.items():
            texts = [queries[i].text or "" for i in picked]
            try:
                with _served(record):
                    fingerprint, embedded, used = await self._embedder.embed_texts_in(
                        texts, language, remaining, record.model.fingerprint)
            except InvalidArgument as err:
                for i in picked:
                    out[i] = refused(str(err))
                continue
            self._check_model(record, fingerprint)
            for i, embedding, tower in zip(picked, embedded, used, strict=True):
                out[i] = embedding
                if towers is not None:
                    towers[i] = tower

    async def _adapt(self, record: CollectionRecord, queries: Sequence[Query],
                     out: list[Embedding], adapt: Sequence[bool] | None) -> None:
        """The text vectors through the collection's enabled adaptation, if it has one."""
        texts = [i for i, q in enumerate(queries)
                 if q.text is not None and not isinstance(out[i], Outcome)
                 and (adapt is None or adapt[i])]
        matrix = await self.adaptations.active(self.store, record) if texts else None
        if matrix is not None:
            mapped = adaptation_fit.apply(matrix, np.stack([out[i] for i in texts]))  # type: ignore[misc]
            for i, vector in zip(texts, mapped, strict=True):
                out[i] = vector

    async def _stored_vectors(self, record: CollectionRecord, queries: Sequence[Query],
                              out: list[Embedding]) -> None:
        picked = []
        for i, query in enumerate(queries):
            if query.image_id is not None:
                try:
                    picked.append((i, check.check_external_id(query.image_id)))
                except InvalidArgument as err:
                    out[i] = refused(str(err))
        if not picked:
            return
        found = {image.external_id: image.vector for image in await self.store.get(
            record, [external_id for _, external_id in picked], True)}
        for i, external_id in picked:
            vector = found.get(external_id)
            out[i] = vector if vector is not None else refused(
                f"image {external_id!r} is not in collection {record.name!r}", Problem.NOT_FOUND)

    async def embed_texts(self, record: CollectionRecord, texts: Sequence[str],
                          remaining: float | None) -> list[Embedding]:
        """Texts' vectors in the collection's space (the embedder's model checked first)."""
        with _served(record):
            fingerprint, embedded = await self._embedder.embed_texts(
                texts, remaining, record.model.fingerprint)
        self._check_model(record, fingerprint)
        return embedded

    @staticmethod
    def _check_model(record: CollectionRecord, fingerprint: str) -> None:
        """An embedder older than several models ignores the model a call names."""
        if fingerprint != record.model.fingerprint:
            raise ModelMismatch(
                f"collection {record.name!r} uses model {record.model.model_name} "
                f"({record.model.fingerprint}); the embedder now serves {fingerprint}. "
                "Serve that model again (EMBEDDER_EXTRA_BUNDLES), or move the collection to "
                "a served one (StartMigration)")


@contextmanager
def _served(record: CollectionRecord) -> Iterator[None]:
    """A call for the model of a collection the embedder no longer serves: the collection's
    precondition, not a missing resource of the caller's."""
    try:
        yield
    except ModelNotServed as err:
        raise ModelMismatch(
            f"collection {record.name!r} uses model {record.model.model_name} "
            f"({record.model.fingerprint}), which the embedder does not serve now: {err}. "
            "Serve that model again (EMBEDDER_EXTRA_BUNDLES), or move the collection to a "
            "served one (StartMigration)") from err


async def _nothing() -> list[Embedding]:
    return []


def without(hits: list[Hit], own: frozenset[str], limit: int) -> list[Hit]:
    """The first `limit` hits other than the images `own` (a query's own)."""
    return [h for h in hits if h.external_id not in own][:limit]


def _raw_vector(vector: np.ndarray, dimension: int) -> Embedding:
    if vector.shape != (dimension,):
        return refused(f"vector has {vector.size} values; the collection's dimension is "
                       f"{dimension}")
    if not np.all(np.isfinite(vector)):
        return refused("vector must be finite and non-zero")
    # Scaled by its largest value first, in float64: the norm of [3e38, 0, ...] overflows
    # float32 and that of [1e-30, ...] underflows, though both have a direction.
    wide = vector.astype(np.float64)
    peak = float(np.max(np.abs(wide)))
    if peak == 0:
        return refused("vector must be finite and non-zero")
    wide /= peak
    normalised: np.ndarray = (wide / np.linalg.norm(wide)).astype(np.float32)
    return normalised


def _validate_new(images: Sequence[NewImage]) -> list[Outcome]:
    outcomes, seen = [], set()
    for image in images:
        try:
            check.check_external_id(image.id)
            check.check_metadata(image.metadata)
        except InvalidArgument as err:
            outcomes.append(refused(str(err)))
            continue
        if image.id in seen:
            outcomes.append(refused(f"id {image.id!r} appears more than once in this request"))
            continue
        seen.add(image.id)
        outcomes.append(DONE)
    return outcomes
