"""In-memory fakes of the core's own ports (search_service.ports), for fast unit tests of the
core and the analyses. The integration suite runs the same behaviour on real Milvus."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from imagesearch.errors import InvalidArgument
from search_service.domain import (
    CollectionRecord,
    Condition,
    Embedding,
    Hit,
    Kept,
    ModelSpace,
    Op,
    Problem,
    ServedModel,
    StoredImage,
    refused,
)
from search_service.errors import (
    CollectionExists,
    CollectionNotFound,
    EmbedderUnavailable,
    ModelNotServed,
)

DIMENSION = 8
MODEL = ModelSpace("sha256:" + "fa" * 32, DIMENSION, "fake-model")


# A second model, for migrations: another space, another dimension.
OTHER_MODEL = ModelSpace("sha256:" + "0b" * 32, 6, "other-model")


def unit(seed: str, dimension: int = DIMENSION) -> np.ndarray:
    digest = hashlib.sha256(seed.encode()).digest()
    vector = np.frombuffer(digest[:dimension * 4], dtype=np.uint32).astype(np.float32) - 2 ** 31
    return vector / np.linalg.norm(vector)


def _matches(metadata: dict[str, Any], condition: Condition) -> bool:
    if condition.op is Op.EXISTS:
        return condition.key in metadata
    if condition.key not in metadata:
        return False
    value = metadata[condition.key]
    if condition.op is Op.IN:
        return value in condition.values
    if condition.op is Op.NOT_IN:
        return value not in condition.values
    target = condition.values[0]
    compare = {Op.EQ: value == target, Op.NE: value != target}
    if condition.op in compare:
        return compare[condition.op]
    return {Op.LT: value < target, Op.LTE: value <= target, Op.GT: value > target,
            Op.GTE: value >= target}[condition.op]


class FakeStore:
    """A VectorStore in dicts, with exact (brute-force) cosine search."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.records: dict[str, CollectionRecord] = {}
        # Per collection key, then per space (the fingerprint of a record's model).
        self.spaces: dict[str, dict[str, dict[str, StoredImage]]] = {}
        self.calls: list[str] = []
        self._keys = itertools.count()
        # Rows' updated_at_ms: the clock's milliseconds, kept strictly increasing.
        self._time = clock or (lambda: 0)
        self._last_stamp = 0

    async def create_collection(self, name: str, model: ModelSpace,
                                description: str) -> CollectionRecord:
        self.calls.append("create_collection")
        if name in self.records:
            raise CollectionExists(f"collection {name!r} already exists")
        record = CollectionRecord(name, model, description, 1, f"~{next(self._keys)}")
        self.records[name], self.spaces[record.key] = record, {}
        return record

    async def get_collection(self, name: str) -> CollectionRecord:
        self.calls.append("get_collection")
        if name not in self.records:
            raise CollectionNotFound(f"collection {name!r} does not exist")
        return self.records[name]

    async def list_collections(self, limit: int, after: str) -> list[CollectionRecord]:
        return [self.records[n] for n in sorted(self.records) if n > after][:limit]

    async def delete_collection(self, name: str) -> None:
        record = await self.get_collection(name)
        del self.records[name], self.spaces[record.key]

    def stamp(self) -> int:
        self._last_stamp = max(self._time(), self._last_stamp + 1)
        return self._last_stamp

    async def update_collection(self, record: CollectionRecord) -> None:
        self.calls.append("update_collection")
        current = self.records.get(record.name)
        if current is None or current.key != record.key:
            raise CollectionNotFound(f"collection {record.name!r} does not exist")
        self.records[record.name] = record

    async def delete_space(self, collection: CollectionRecord) -> None:
        self.spaces.get(collection.key, {}).pop(collection.model.fingerprint, None)

    async def counts(self, collections: Sequence[CollectionRecord]) -> list[int]:
        self.calls.append(f"counts:{len(collections)}")
        return [len(self._rows(c)) for c in collections]

    async def upsert(self, collection: CollectionRecord, ids: Sequence[str],
                     vectors: np.ndarray, metadata: Sequence[dict[str, Any]]) -> None:
        self.calls.append("upsert")
        current = self.records.get(collection.name)
        if current is None or current.key != collection.key:
            raise CollectionNotFound(f"collection {collection.name!r} was deleted")
        rows = self.spaces[collection.key].setdefault(collection.model.fingerprint, {})
        if vectors.shape[1:] != (collection.model.dimension,):
            raise AssertionError(f"vectors of {vectors.shape} into {collection.model}")
        for image_id, vector, meta in zip(ids, vectors, metadata, strict=True):
            rows[image_id] = StoredImage(image_id, dict(meta), vector, self.stamp())

    async def get(self, collection: CollectionRecord, ids: Sequence[str],
                  with_vectors: bool = False, strong: bool = False) -> list[StoredImage]:
        # One process: every read sees every write, strong or not.
        self.calls.append(f"get:{len(ids)}")
        rows = self._rows(collection)
        return [self._out(rows[i], with_vectors) for i in ids if i in rows]

    async def list_images(self, collection: CollectionRecord, limit: int, after: str,
                          with_vectors: bool = False,
                          with_metadata: bool = True) -> list[StoredImage]:
        rows = self._rows(collection)
        return [self._out(rows[i], with_vectors) for i in sorted(rows) if i > after][:limit]

    async def delete(self, collection: CollectionRecord, ids: Sequence[str]) -> None:
        for image_id in ids:
            self._rows(collection).pop(image_id, None)

    async def search(self, collection: CollectionRecord, queries: np.ndarray, top_k: int,
                     conditions: tuple[Condition, ...] = (),
                     min_similarity: float = -1.0) -> list[list[Hit]]:
        self.calls.append(f"search:{len(queries)}")
        rows = [r for r in self._rows(collection).values()
                if all(_matches(r.metadata, c) for c in conditions)]
        out = []
        for query in queries:
            scored = sorted(((float(np.dot(query, r.vector)), r) for r in rows  # type: ignore[arg-type]
                             ), key=lambda pair: (-pair[0], pair[1].external_id))
            out.append([Hit(r.external_id, s, r.metadata) for s, r in scored[:top_k]
                        if s >= min_similarity])
        return out

    async def check(self) -> None:
        return None

    async def sweep(self) -> list[str]:
        return []

    async def close(self) -> None:
        return None

    def _rows(self, collection: CollectionRecord) -> dict[str, StoredImage]:
        return self.spaces.get(collection.key, {}).get(collection.model.fingerprint, {})

    @staticmethod
    def _out(row: StoredImage, with_vectors: bool) -> StoredImage:
        return row if with_vectors else StoredImage(row.external_id, row.metadata,
                                                    updated_at_ms=row.updated_at_ms)


class FakeEmbedder:
    """Bytes and texts to deterministic unit vectors; b"bad..." is refused as not an image.

    Serves `serving` (the primary) and the models in `extra`; a call naming another model
    raises ModelNotServed. With `ignores_names`, it behaves as an embedder older than several
    models: it embeds every call with its primary, whatever the call names."""

    def __init__(self, model: ModelSpace = MODEL, extra: Sequence[ModelSpace] = ()) -> None:
        self.serving = model
        self.extra = list(extra)
        self.ignores_names = False
        self.calls: list[tuple[str, int]] = []
        self.down = False
        # Model fingerprints whose calls fail as if their embedder were unreachable.
        self.down_models: set[str] = set()
        # Per model fingerprint, image bytes that model refuses.
        self.refuses: dict[str, set[bytes]] = {}

    def _pick(self, model: str) -> ModelSpace:
        if self.down:
            raise EmbedderUnavailable("the embedder is unavailable (UNAVAILABLE); retry shortly")
        if not model or self.ignores_names:
            return self.serving
        for space in (self.serving, *self.extra):
            if model in (space.fingerprint, space.model_name):
                if space.fingerprint in self.down_models:
                    raise EmbedderUnavailable("the embedder is unavailable (UNAVAILABLE)")
                return space
        raise ModelNotServed(f"model {model!r} is not served; served: "
                             + ", ".join(s.model_name for s in (self.serving, *self.extra)))

    async def model(self, remaining: float | None = None, model: str = "") -> ModelSpace:
        return self._pick(model)

    async def models(self, remaining: float | None = None) -> list[ServedModel]:
        self._pick("")
        return [ServedModel(s, s == self.serving, True, 224, ("en",))
                for s in (self.serving, *self.extra)]

    async def embed_images(self, images: Sequence[bytes], remaining: float | None = None,
                           model: str = "") -> tuple[str, list[Embedding]]:
        space = self._pick(model)
        self.calls.append(("images", len(images)))
        # The primary's vectors as they always were; another model's from its own seed.
        seed = "" if space == MODEL else space.fingerprint
        refuses = self.refuses.get(space.fingerprint, set())
        return space.fingerprint, [
            refused("bytes are not an image", Problem.INVALID_ARGUMENT)
            if data.startswith(b"bad") or data in refuses
            else unit(seed + data.hex(), space.dimension) for data in images]

    async def embed_images_signed(self, images: Sequence[bytes],
                                  remaining: float | None = None, thumbnail_side: int = 0,
                                  model: str = "", pixels_side: int = 0,
                                  ) -> tuple[str, list[Embedding], list[Kept]]:
        """Like an embedder older than copy signals and thumbnails, it makes none; its
        normalised pixels (when asked) are the bytes themselves."""
        fingerprint, embedded = await self.embed_images(images, remaining, model)
        return fingerprint, embedded, [Kept(pixels=data if pixels_side else None)
                                       for data in images]

    async def embed_texts(self, texts: Sequence[str], remaining: float | None = None,
                          model: str = "") -> tuple[str, list[Embedding]]:
        space = self._pick(model)
        self.calls.append(("texts", len(texts)))
        seed = "" if space == MODEL else space.fingerprint
        return space.fingerprint, [unit(seed + "text:" + t, space.dimension) for t in texts]

    async def embed_texts_in(self, texts: Sequence[str], language: str,
                             remaining: float | None = None, model: str = "",
                             ) -> tuple[str, list[Embedding], list[str]]:
        """One tower, "default", serving English; "auto" and "" use it too."""
        if language not in ("", "auto", "en"):
            raise InvalidArgument(f"no text tower serves language {language!r}; this model "
                                  "serves en")
        fingerprint, embedded = await self.embed_texts(texts, remaining, model)
        return fingerprint, embedded, ["default"] * len(texts)


class MemoryImages:
    """An ImageStore in a dict."""

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, str, str], bytes] = {}

    async def put(self, key: str, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        self.kinds.update({(key, kind, i): data for i, data in items})

    async def get(self, key: str, kind: str, ids: Sequence[str]) -> dict[str, bytes]:
        return {i: self.kinds[key, kind, i] for i in ids if (key, kind, i) in self.kinds}

    async def delete(self, key: str, ids: Sequence[str]) -> None:
        self.kinds = {k: v for k, v in self.kinds.items() if not (k[0] == key and k[2] in ids)}

    async def delete_collection(self, key: str) -> None:
        self.kinds = {k: v for k, v in self.kinds.items() if k[0] != key}

    async def check(self) -> None: ...

    async def close(self) -> None: ...
