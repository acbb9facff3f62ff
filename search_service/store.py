"""Milvus storage for many tenant collections (pymilvus MilvusClient; no grpc imports here).

Layout:
- `imagesearch_collections` and `imagesearch_claims`: the registry, one row per tenant
  collection with the embedding model it was built with and the key its rows carry (see
  registry.py for how creations and deletions stay apart). Milvus needs a vector field in
  every collection, so these carry a 2-d placeholder.
- `imagesearch_vectors_<fingerprint prefix>`: one Milvus collection per embedding model. Rows
  are keyed "<collection key>/<external id>", so re-adding an id replaces it (upsert, never a
  duplicate), and the collection key is the partition key: thousands of tenant collections
  cost no Milvus collections, and every query is pruned to its tenant's partition (except on
  Milvus 2.3, see ServerTraits).

No caller's string reaches Milvus but as a literal from filters.literal (escaped, and proven
against both Milvus builds by tests/search_service/test_tenants.py and the fuzzer); ids are
never given to pymilvus' `ids=` arguments, which it pastes into expressions unescaped.

The same code serves Milvus Lite (a file path URI) and a Milvus server or cluster (http URI).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from search_service.errors import CollectionNotFound
from search_service.filters import (
    COLLECTION_FIELD,
    METADATA_FIELD,
    Condition,
    compile_filter,
    literal,
)
from search_service.registry import (
    CLAIMS,
    REGISTRY,
    SWEEP_AFTER_MS,
    CollectionRecord,
    ModelSpace,
    Registry,
)

# Milvus' error code for a query on a collection that is not loaded (merr.ErrCollectionNotLoaded).
COLLECTION_NOT_LOADED = 101
VECTOR_FIELD = "vector"
# Milvus evaluates a query in "iterator" mode with results ordered by primary key, which makes
# `pk > last` a correct, resumable page cursor (pymilvus' own query_iterator relies on it).
_ORDERED = {"iterator": "True", "reduce_stop_for_best": "True"}


@dataclass(frozen=True)
class StoredImage:
    external_id: str
    metadata: dict[str, Any]
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Hit:
    external_id: str
    similarity: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class IndexConfig:
    """Vector index: HNSW on a Milvus server; Milvus Lite picks its own (AUTOINDEX)."""

    index_type: str = "HNSW"
    build_params: dict[str, Any] = field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    search_params: dict[str, Any] = field(default_factory=lambda: {"ef": 128})

    @classmethod
    def for_uri(cls, uri: str) -> IndexConfig:
        if is_lite(uri):
            return cls(index_type="AUTOINDEX", build_params={}, search_params={})
        return cls()


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://"))


MIN_SERVER_VERSION = (2, 3)


@dataclass(frozen=True)
class ServerTraits:
    """What a Milvus deployment gets right; servers before 2.4 need two workarounds
    (both reproduced on 2.3.5, see tests/search_service/test_store.py)."""

    # Upsert into a partition-key collection keeps its rows. 2.3 drops them while reporting
    # success, so there tenants are kept apart by the collection filter alone.
    partition_key: bool = True
    # A Session-consistency read right after a delete no longer sees the row. On 2.3 it does
    # for one time tick (0.2-0.4 s), so there a delete waits for a Strong read before returning.
    deletes_visible_at_once: bool = True

    @classmethod
    def of(cls, version: str) -> ServerTraits:
        found = server_version(version)
        modern = found is None or found >= (2, 4)
        return cls(partition_key=modern, deletes_visible_at_once=modern)


def server_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Milvus version string, or None for a build we cannot parse."""
    parts = version.lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def check_server_version(version: str) -> None:
    """Refuses Milvus servers before 2.3, which have no upsert."""
    found = server_version(version)
    if found is not None and found < MIN_SERVER_VERSION:
        raise RuntimeError(
            f"Milvus server {version} is not supported: upsert needs Milvus "
            f"{'.'.join(map(str, MIN_SERVER_VERSION))} or later. Upgrade Milvus, or use "
            "Milvus Lite (a file path as SEARCH_MILVUS_URI)")


class SerialWrites:
    """A Milvus Lite client whose writes run one at a time.

    Milvus Lite 3.2's write-ahead log interleaves the record batches of concurrent writers;
    after a crash its recovery stops at the first batch that does not validate and drops every
    write after it, acknowledged or not (4 threads upserting, then SIGKILL: 30 of 1200 rows
    came back). Lite runs in this process under the GIL, so serial writes cost little.
    """

    _WRITES = frozenset({"insert", "upsert", "delete"})

    def __init__(self, client: MilvusClient) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._WRITES:
            return attribute

        def serially(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)
        return serially


def open_one_at_a_time(client: Any) -> None:
    """Opens every collection of a Milvus Lite file, one after the other, before any call can
    race for them. Lite 3.2 opens a collection on first use without a lock, so concurrent first
    uses each open their own instance - its own memory table, write-ahead log file and
    sequence numbers - and the writes of all but one are lost (found by tests/faults: up to 48
    acknowledged images missing after a restart under load)."""
    for name in client.list_collections():
        client.describe_collection(name)


def vectors_collection(model: ModelSpace) -> str:
    return "imagesearch_vectors_" + model.fingerprint.removeprefix("sha256:")[:16]


def _pk(collection: CollectionRecord, external_id: str) -> str:
    return f"{collection.key}/{external_id}"


def _rows_filter(collection: CollectionRecord, external_ids: Sequence[str]) -> str:
    pks = ", ".join(literal(_pk(collection, eid)) for eid in external_ids)
    return f"{compile_filter(collection.key)} and pk in [{pks}]"


class MilvusStore:
    def __init__(self, client: MilvusClient, index: IndexConfig,
                 consistency: str = "Session", traits: ServerTraits | None = None,
                 timeout_s: float = 10.0) -> None:
        self._client = client
        # Every call's deadline: a Milvus that stops answering fails it (UNAVAILABLE) and
        # frees its thread, rather than holding both until Milvus answers again.
        self._timeout_s = timeout_s
        # Creating a collection loads it; loading a large one (after a Milvus restart) takes
        # longer than any other call.
        self._load_timeout_s = max(timeout_s, 120.0)
        self._index = index
        self._traits = traits or ServerTraits()
        # Session consistency: a search sees this client's own earlier writes (read-your-
        # writes) without paying for Strong consistency on every request.
        self._consistency = consistency
        self._loaded: set[str] = set()
        self._registry = Registry(client, consistency, timeout_s)
        self._creating = threading.Lock()
        # Every collection ever loaded, for the health check (_loaded empties on a restart).
        self._used: set[str] = set()

    @classmethod
    def connect(cls, uri: str, token: str = "", index: IndexConfig | None = None,
                consistency: str = "Session", timeout_s: float = 10.0) -> MilvusStore:
        """Opens Milvus Lite (a file path) or a Milvus server (http URI, optionally with the
        database as its path) and prepares the registry (blocking)."""
        client: Any = MilvusClient(uri, token=token)
        traits = ServerTraits()
        if is_lite(uri):
            client = SerialWrites(client)
            open_one_at_a_time(client)
        else:
            version = client.get_server_version(timeout=timeout_s)
            check_server_version(version)
            traits = ServerTraits.of(version)
        store = cls(client, index or IndexConfig.for_uri(uri), consistency, traits, timeout_s)
        store.ensure_registry()
        return store

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def close(self) -> None:
        self._client.close()

    def ensure_registry(self) -> None:
        for name, schema in self._registry.schemas().items():
            if not self._client.has_collection(name, timeout=self._timeout_s):
                self._create(name, schema, "placeholder",
                             IndexConfig(index_type="AUTOINDEX", build_params={}))
            self._load(name)

    # Collections -------------------------------------------------------------------------

    def create_collection(self, name: str, model: ModelSpace,
                          description: str = "") -> CollectionRecord:
        self._ensure_vectors(model)
        self._load_registry()
        return self._registry.create(name, model, description)

    def get_collection(self, name: str) -> CollectionRecord:
        record = self._find(name)
        if record is None:
            raise CollectionNotFound(f"collection {name!r} does not exist")
        return record

    def list_collections(self, limit: int, after: str = "") -> list[CollectionRecord]:
        self._load_registry()
        self._catch_up(REGISTRY)
        return self._registry.page(limit, after, _ORDERED)

    def delete_collection(self, name: str) -> None:
        """The name is free at once; the rows go now, and again in `sweep` for any write that
        was still landing."""
        record = self.get_collection(name)
        self._registry.delete(record)
        self._delete_rows(record)
        self._settle(REGISTRY)

    def sweep(self, now_ms: int | None = None) -> int:
        """Deletes the rows of collections deleted long enough ago that no write begun before
        the deletion can still land, then their tombstones; returns how many were swept."""
        self._load_registry()
        cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - SWEEP_AFTER_MS
        swept = self._registry.tombstones(older_than_ms=cutoff)
        for tombstone in swept:
            self._delete_rows(tombstone)
            self._registry.bury(tombstone)
        return len(swept)

    def _delete_rows(self, record: CollectionRecord) -> None:
        rows = self._vectors(record)
        self._client.delete(rows, filter=compile_filter(record.key), timeout=self._timeout_s)
        self._settle(rows)

    def check(self) -> None:
        """Raises unless Milvus answers a read of the registry and of every vectors collection
        this store has used, each within the timeout. A restarting server accepts connections
        well before it answers queries, and answers on the registry before a large collection
        is loaded again: SERVING only once every collection a call may touch answers."""
        for name in (REGISTRY, *sorted(self._used - {REGISTRY})):
            try:
                self._probe(name)
            except MilvusException as err:
                if err.code != COLLECTION_NOT_LOADED:
                    raise
                self._loaded.discard(name)  # restarted: load again
                self._probe(name)

    def _probe(self, name: str) -> None:
        self._load(name)
        self._client.query(name, filter="", limit=1, output_fields=[],
                           consistency_level=self._consistency, timeout=self._timeout_s)

    def _find(self, name: str, consistency: str | None = None) -> CollectionRecord | None:
        self._load_registry()
        return self._registry.find(name, consistency)

    # Images ------------------------------------------------------------------------------

    def upsert(self, collection: CollectionRecord, external_ids: Sequence[str],
               vectors: np.ndarray, metadata: Sequence[dict[str, Any]]) -> None:
        """Stores the rows, or raises CollectionNotFound and stores none if the collection was
        deleted (or deleted and created again) before they landed."""
        now = int(time.time() * 1000)
        rows = [{"pk": _pk(collection, eid), COLLECTION_FIELD: collection.key,
                 "external_id": eid, VECTOR_FIELD: vector.tolist(), METADATA_FIELD: meta,
                 "updated_at_ms": now}
                for eid, vector, meta in zip(external_ids, vectors, metadata, strict=True)]
        if not rows:
            return
        name = self._vectors(collection)
        self._client.upsert(name, rows, timeout=self._timeout_s)
        # Strong: a deletion through another replica is seen too.
        current = self._find(collection.name, "Strong")
        if current is None or current.key != collection.key:
            self._client.delete(name, filter=_rows_filter(collection, external_ids),
                                timeout=self._timeout_s)
            raise CollectionNotFound(f"collection {collection.name!r} was deleted while these "
                                     "images were being added; none of them was stored")

    def get(self, collection: CollectionRecord, external_ids: Sequence[str],
            with_vectors: bool = False) -> list[StoredImage]:
        fields = ["external_id", METADATA_FIELD] + ([VECTOR_FIELD] if with_vectors else [])
        rows = self._client.query(self._vectors(collection),
                                  filter=_rows_filter(collection, external_ids),
                                  output_fields=fields, consistency_level=self._consistency,
                                  timeout=self._timeout_s)
        found = {row["external_id"]: _image(row) for row in rows}
        return [found[eid] for eid in external_ids if eid in found]

    def list_images(self, collection: CollectionRecord, limit: int,
                    after_external_id: str = "", with_vectors: bool = False) -> list[StoredImage]:
        cursor = literal(_pk(collection, after_external_id))
        fields = ["external_id", METADATA_FIELD] + ([VECTOR_FIELD] if with_vectors else [])
        name = self._vectors(collection)
        self._catch_up(name)
        rows = self._client.query(
            name,
            filter=f"{compile_filter(collection.key)} and pk > {cursor}",
            output_fields=fields, limit=limit,
            consistency_level=self._consistency, **_ORDERED, timeout=self._timeout_s)
        return [_image(row) for row in rows]

    def count(self, collection: CollectionRecord) -> int:
        rows = self._client.query(self._vectors(collection),
                                  filter=compile_filter(collection.key),
                                  output_fields=["count(*)"],
                                  consistency_level=self._consistency, timeout=self._timeout_s)
        return int(rows[0]["count(*)"])

    def delete(self, collection: CollectionRecord, external_ids: Sequence[str]) -> int:
        name = self._vectors(collection)
        result = self._client.delete(name, filter=_rows_filter(collection, external_ids),
                                     timeout=self._timeout_s)
        self._settle(name)
        return int(result.get("delete_count", 0)) if isinstance(result, dict) else 0

    def search(self, collection: CollectionRecord, queries: np.ndarray, top_k: int,
               conditions: tuple[Condition, ...] = (),
               min_similarity: float = -1.0) -> list[list[Hit]]:
        results = self._client.search(
            self._vectors(collection), data=[q.tolist() for q in queries],
            anns_field=VECTOR_FIELD, limit=top_k,
            filter=compile_filter(collection.key, conditions),
            output_fields=["external_id", METADATA_FIELD],
            search_params={"metric_type": "COSINE", "params": self._index.search_params},
            consistency_level=self._consistency, timeout=self._timeout_s)
        return [[Hit(hit["entity"]["external_id"], float(hit["distance"]),
                     hit["entity"][METADATA_FIELD])
                 for hit in hits if float(hit["distance"]) >= min_similarity]
                for hits in results]

    # Milvus collections ------------------------------------------------------------------

    def forget_loaded(self) -> None:
        """Loads every collection again on next use (after a Milvus server restart)."""
        self._loaded.clear()

    def _load_registry(self) -> None:
        self._load(REGISTRY)
        self._load(CLAIMS)

    def _catch_up(self, name: str) -> None:
        """Makes the next ordered (iterator-mode) query see this client's writes.

        pymilvus sends no session timestamp with iterator-mode queries, so on a server they
        read whatever the query nodes have applied (a fresh write was missed every time on
        2.3.5). A plain query at the store's consistency first waits for that timestamp."""
        self._client.query(name, filter="", limit=1, output_fields=[],
                           consistency_level=self._consistency, timeout=self._timeout_s)

    def _settle(self, name: str) -> None:
        """Returns once this client's deletes in `name` are visible to its Session reads."""
        if not self._traits.deletes_visible_at_once:
            # A Strong read waits until the query nodes have applied every earlier write.
            self._client.query(name, filter="", limit=1, output_fields=[],
                               consistency_level="Strong", timeout=self._timeout_s)

    def _vectors(self, collection: CollectionRecord) -> str:
        name = vectors_collection(collection.model)
        self._load(name)
        return name

    def _ensure_vectors(self, model: ModelSpace) -> None:
        name = vectors_collection(model)
        with self._creating:  # two creators in this process must not both create it
            if not self._client.has_collection(name, timeout=self._timeout_s):
                self._create_vectors(name, model)
        self._load(name)

    def _create_vectors(self, name: str, model: ModelSpace) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        # Lengths leave room for UTF-8: ids are up to 256 characters.
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=1100)
        schema.add_field(COLLECTION_FIELD, DataType.VARCHAR, max_length=64,
                         is_partition_key=self._traits.partition_key)
        schema.add_field("external_id", DataType.VARCHAR, max_length=1024)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=model.dimension)
        schema.add_field(METADATA_FIELD, DataType.JSON)
        schema.add_field("updated_at_ms", DataType.INT64)
        try:
            self._create(name, schema, VECTOR_FIELD, self._index)
        except (MilvusException, FileExistsError):
            # Another replica (or another client of this Lite file) created it meanwhile.
            if not self._client.has_collection(name, timeout=self._timeout_s):
                raise

    def _create(self, name: str, schema: Any, vector_field: str, index: IndexConfig) -> None:
        params = self._client.prepare_index_params()
        params.add_index(vector_field, index_type=index.index_type, metric_type="COSINE",
                         params=index.build_params)
        self._client.create_collection(name, schema=schema, index_params=params,
                                       consistency_level=self._consistency,
                                       timeout=self._load_timeout_s)

    def _load(self, name: str) -> None:
        # A reopened Milvus Lite file (or a restarted server) has its collections released.
        if name not in self._loaded:
            self._client.load_collection(name, timeout=self._load_timeout_s)
            self._loaded.add(name)
            self._used.add(name)


def _image(row: dict[str, Any]) -> StoredImage:
    vector = row.get(VECTOR_FIELD)
    return StoredImage(row["external_id"], row[METADATA_FIELD],
                       None if vector is None else np.asarray(vector, dtype=np.float32))
