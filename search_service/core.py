"""The search core: collections, ingest and retrieval. No grpc here.

pymilvus' MilvusClient is synchronous, so every store call runs on a thread pool, never on the
event loop. Every call that embeds checks the embedder's model fingerprint against the
collection's before anything is written or searched: vector spaces never mix.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from pymilvus.client.types import Status
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from imagesearch.errors import InvalidArgument
from search_service.embedder_client import Embedded
from search_service.errors import MilvusUnavailable, ModelMismatch
from search_service.filters import Condition, Scalar
from search_service.names import check_collection_name, check_external_id, check_metadata_key
from search_service.registry import CollectionRecord, ModelSpace
from search_service.store import COLLECTION_NOT_LOADED, Hit, MilvusStore, StoredImage

T = TypeVar("T")
MAX_BATCH = 256
MAX_IDS = 1000
MAX_QUERIES = 64
MAX_METADATA_ENTRIES = 64
MAX_METADATA_STRING = 4096
MAX_DESCRIPTION = 1024
OK, INVALID_ARGUMENT, NOT_FOUND = 0, 3, 5


class EmbedderPort(Protocol):
    async def model(self, remaining: float | None = None) -> ModelSpace: ...

    async def embed_images(self, images: Sequence[bytes], remaining: float | None = None
                           ) -> tuple[str, list[Embedded]]: ...

    async def embed_texts(self, texts: Sequence[str], remaining: float | None = None
                          ) -> tuple[str, list[Embedded]]: ...


@dataclass(frozen=True)
class NewImage:
    id: str
    data: bytes
    # None: a value the caller sent with no kind set, refused for this image alone.
    metadata: dict[str, Scalar | None]


@dataclass(frozen=True)
class ItemStatus:
    code: int = OK
    message: str = ""


@dataclass(frozen=True)
class Query:
    """Exactly one of the fields is set."""

    text: str | None = None
    image: bytes | None = None
    image_id: str | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class QueryResult:
    hits: list[Hit]
    status: ItemStatus = ItemStatus()


def encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token is invalid; pass next_page_token unchanged") from None
    if not isinstance(after, str):
        raise InvalidArgument("page_token is invalid; pass next_page_token unchanged")
    return after


def page_size(requested: int, default: int = 100, most: int = 1000) -> int:
    if requested < 0 or requested > most:
        raise InvalidArgument(f"page_size must be 0 to {most}; got {requested}")
    return requested or default


def check_metadata(metadata: dict[str, Scalar | None]) -> dict[str, Scalar]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(f"metadata has {len(metadata)} entries; at most "
                              f"{MAX_METADATA_ENTRIES}")
    checked: dict[str, Scalar] = {}
    for key, value in metadata.items():
        check_metadata_key(key)
        if value is None:
            raise InvalidArgument(f"metadata {key!r} has no value: set one of string_value, "
                                  "int_value, double_value or bool_value")
        if isinstance(value, str) and len(value) > MAX_METADATA_STRING:
            raise InvalidArgument(f"metadata {key!r} is longer than {MAX_METADATA_STRING} "
                                  "characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"metadata {key!r} is {value}; numbers must be finite")
        checked[key] = value
    return checked


def check_similarity(value: float) -> float:
    if not -1.0 <= value <= 1.0:  # NaN fails too
        raise InvalidArgument(f"min_similarity must be in [-1, 1]; got {value}")
    return value


def _count(kind: str, count: int, most: int) -> None:
    if count == 0:
        raise InvalidArgument(f"request has no {kind}; send 1 to {most}")
    if count > most:
        raise InvalidArgument(f"request has {count} {kind}; the limit is {most}")


class SearchCore:
    def __init__(self, store: MilvusStore, embedder: EmbedderPort, store_threads: int,
                 record_ttl_s: float = 2.0) -> None:
        self._store = store
        self._embedder = embedder
        self._pool = ThreadPoolExecutor(store_threads, thread_name_prefix="milvus")
        # Read paths (search, duplicates, classify) reuse a collection's registry record for
        # a moment instead of a Milvus round trip per call; writes always re-read it, so no
        # instance ever writes into a collection another one has just deleted.
        self._records: dict[str, tuple[float, CollectionRecord]] = {}
        self._record_ttl = record_ttl_s

    async def close(self) -> None:
        self._pool.shutdown(wait=True)

    @property
    def store(self) -> MilvusStore:
        return self._store

    async def collection(self, name: str) -> CollectionRecord:
        """The record for a read path, from the short-lived cache when fresh."""
        cached = self._records.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._record_ttl:
            return cached[1]
        record = await self._fresh(name)
        self._records[name] = (now, record)
        return record

    async def _fresh(self, name: str) -> CollectionRecord:
        """The record read from Milvus now (writes always use this)."""
        return await self._run(self._store.get_collection, check_collection_name(name))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a blocking store call on the Milvus thread pool."""
        return await self._run(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            try:
                return await loop.run_in_executor(self._pool, fn, *args)
            except MilvusException as err:
                if err.code != COLLECTION_NOT_LOADED:
                    raise
                # A restarted Milvus server loads its collections again in the background;
                # loading them from here waits for that, once.
                self._store.forget_loaded()
                return await loop.run_in_executor(self._pool, fn, *args)
        except MilvusException as err:
            if unreachable(err):
                raise MilvusUnavailable("Milvus is unavailable; retry shortly") from err
            raise
        except Exception as err:
            if _code_name(err) == "DEADLINE_EXCEEDED":
                raise MilvusUnavailable(f"Milvus did not answer within "
                                        f"{self._store.timeout_s:g} s; retry shortly") from err
            raise

    # Collections -------------------------------------------------------------------------

    async def create_collection(self, name: str, description: str,
                                remaining: float | None = None) -> tuple[CollectionRecord, int]:
        check_collection_name(name)
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION} characters")
        model = await self._embedder.model(remaining)
        return await self._run(self._store.create_collection, name, model, description), 0

    async def get_collection(self, name: str) -> tuple[CollectionRecord, int]:
        record = await self._fresh(name)
        return record, await self._run(self._store.count, record)

    async def list_collections(self, size: int, token: str,
                               visible: Callable[[str], bool] = lambda name: True,
                               ) -> tuple[list[tuple[CollectionRecord, int]], str]:
        """A page of collections; those `visible` refuses are skipped (the page may come out
        short, the token still moves past them)."""
        limit = page_size(size)
        records = await self._run(self._store.list_collections, limit, decode_token(token))
        counted = [(r, await self._run(self._store.count, r)) for r in records
                   if visible(r.name)]
        return counted, encode_token(records[-1].name) if len(records) == limit else ""

    async def delete_collection(self, name: str) -> None:
        self._records.pop(name, None)
        await self._run(self._store.delete_collection, check_collection_name(name))

    # Images ------------------------------------------------------------------------------

    async def add_images(self, name: str, images: Sequence[NewImage],
                         remaining: float | None = None) -> list[ItemStatus]:
        _count("images", len(images), MAX_BATCH)
        record = await self._fresh(name)
        statuses = _validate_new(images)
        valid = [i for i, status in enumerate(statuses) if status.code == OK]
        if not valid:
            return statuses
        fingerprint, embedded = await self._embedder.embed_images(
            [images[i].data for i in valid], remaining)
        self._check_model(record, fingerprint)
        stored = []
        for index, outcome in zip(valid, embedded, strict=True):
            if outcome.vector is None:
                statuses[index] = ItemStatus(outcome.code, outcome.message)
            else:
                stored.append((index, outcome.vector))
        if stored:
            await self._run(self._store.upsert, record, [images[i].id for i, _ in stored],
                            np.stack([v for _, v in stored]),
                            [images[i].metadata for i, _ in stored])
        return statuses

    async def get_images(self, name: str, ids: Sequence[str], include_vectors: bool
                         ) -> tuple[list[StoredImage], list[str]]:
        record = await self._fresh(name)
        _count("ids", len(ids), MAX_IDS)
        for external_id in ids:
            check_external_id(external_id)
        found = await self._run(self._store.get, record, list(ids), include_vectors)
        present = {image.external_id for image in found}
        return found, [i for i in ids if i not in present]

    async def list_images(self, name: str, size: int, token: str
                          ) -> tuple[list[StoredImage], str]:
        record = await self._fresh(name)
        limit = page_size(size)
        images = await self._run(self._store.list_images, record, limit, decode_token(token))
        return images, encode_token(images[-1].external_id) if len(images) == limit else ""

    async def delete_images(self, name: str, ids: Sequence[str]) -> None:
        record = await self._fresh(name)
        _count("ids", len(ids), MAX_IDS)
        for external_id in ids:
            check_external_id(external_id)
        await self._run(self._store.delete, record, list(ids))

    # Search ------------------------------------------------------------------------------

    async def search(self, name: str, queries: Sequence[Query], top_k: int,
                     min_similarity: float, conditions: tuple[Condition, ...],
                     remaining: float | None = None) -> list[QueryResult]:
        record = await self.collection(name)
        _count("queries", len(queries), MAX_QUERIES)
        if not 0 <= top_k <= 1000:
            raise InvalidArgument(f"top_k must be 0 to 1000; got {top_k}")
        check_similarity(min_similarity)
        vectors = await self.query_vectors(record, queries, remaining)
        ready = [i for i, v in enumerate(vectors) if isinstance(v, np.ndarray)]
        results = [QueryResult([], v) if isinstance(v, ItemStatus) else QueryResult([])
                   for v in vectors]
        if ready:
            batch = np.stack([vectors[i] for i in ready])  # type: ignore[misc]
            hits = await self._run(self._store.search, record, batch, top_k or 10, conditions,
                                   min_similarity)
            for index, found in zip(ready, hits, strict=True):
                results[index] = QueryResult(found)
        return results

    async def query_vectors(self, record: CollectionRecord, queries: Sequence[Query],
                            remaining: float | None) -> list[np.ndarray | ItemStatus]:
        """Each query's unit vector, or the status saying why it has none."""
        out: list[np.ndarray | ItemStatus] = [ItemStatus(INVALID_ARGUMENT, "query is empty: "
                                                         "set text, image, image_id or vector")
                                              ] * len(queries)
        for kind in ("text", "image"):
            picked = [i for i, q in enumerate(queries) if getattr(q, kind) is not None]
            if picked:
                embedder = self._embedder
                embed = embedder.embed_texts if kind == "text" else embedder.embed_images
                fingerprint, embedded = await embed(
                    [getattr(queries[i], kind) for i in picked], remaining)
                self._check_model(record, fingerprint)
                for i, e in zip(picked, embedded, strict=True):
                    out[i] = e.vector if e.vector is not None else ItemStatus(e.code, e.message)
        await self._stored_vectors(record, queries, out)
        for i, query in enumerate(queries):
            if query.vector is not None:
                out[i] = _raw_vector(query.vector, record.model.dimension)
        return out

    async def _stored_vectors(self, record: CollectionRecord, queries: Sequence[Query],
                              out: list[np.ndarray | ItemStatus]) -> None:
        picked = []
        for i, query in enumerate(queries):
            if query.image_id is not None:
                try:
                    picked.append((i, check_external_id(query.image_id)))
                except InvalidArgument as err:
                    out[i] = ItemStatus(INVALID_ARGUMENT, str(err))
        if not picked:
            return
        found = {image.external_id: image.vector for image in await self._run(
            self._store.get, record, [external_id for _, external_id in picked], True)}
        for i, external_id in picked:
            vector = found.get(external_id)
            out[i] = vector if vector is not None else ItemStatus(
                NOT_FOUND, f"image {external_id!r} is not in collection {record.name!r}")

    @staticmethod
    def _check_model(record: CollectionRecord, fingerprint: str) -> None:
        if fingerprint != record.model.fingerprint:
            raise ModelMismatch(
                f"collection {record.name!r} was built with model {record.model.model_name} "
                f"({record.model.fingerprint}); the embedder now serves {fingerprint}. "
                "Search it with the original model, or re-index into a new collection")


def _raw_vector(vector: np.ndarray, dimension: int) -> np.ndarray | ItemStatus:
    if vector.shape != (dimension,):
        return ItemStatus(INVALID_ARGUMENT, f"vector has {vector.size} values; the collection's "
                                            f"dimension is {dimension}")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        return ItemStatus(INVALID_ARGUMENT, "vector must be finite and non-zero")
    normalised: np.ndarray = vector / norm
    return normalised


def _validate_new(images: Sequence[NewImage]) -> list[ItemStatus]:
    statuses, seen = [], set()
    for image in images:
        try:
            check_external_id(image.id)
            check_metadata(image.metadata)
        except InvalidArgument as err:
            statuses.append(ItemStatus(INVALID_ARGUMENT, str(err)))
            continue
        if image.id in seen:
            statuses.append(ItemStatus(INVALID_ARGUMENT, f"id {image.id!r} appears more than "
                                                         "once in this request"))
            continue
        seen.add(image.id)
        statuses.append(ItemStatus())
    return statuses



def unreachable(err: MilvusException) -> bool:
    """A Milvus server that is down or restarting: pymilvus reports it as a failed
    (re)connection, not as MilvusUnavailableException, or - once a call's timeout has ended
    its retries - with the gRPC status as the code."""
    return (isinstance(err, MilvusUnavailableException) or err.code == Status.CONNECT_FAILED
            or getattr(err.code, "name", None) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"))


def _code_name(err: Exception) -> str | None:
    """The gRPC status of an error pymilvus let through as it came (a call's deadline ends
    as a bare grpc.RpcError); None for anything else. Read by name: no grpc import here."""
    code = getattr(err, "code", None)
    return getattr(code(), "name", None) if callable(code) else None
