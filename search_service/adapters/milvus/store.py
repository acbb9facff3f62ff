"""Milvus storage for many tenant collections, through pymilvus' (blocking) MilvusClient.
The layout is in the package's docstring (search_service/adapters/milvus/__init__.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from search_service.adapters.milvus.config import IndexConfig, ServerTraits
from search_service.adapters.milvus.expressions import (
    COLLECTION_FIELD,
    METADATA_FIELD,
    compile_filter,
    literal,
    rows_filter,
)
from search_service.adapters.milvus.registry import CLAIMS, REGISTRY, SWEEP_AFTER_MS, Registry
from search_service.adapters.milvus.schema import VECTOR_FIELD, vectors_collection, vectors_schema
from search_service.domain import CollectionRecord, Condition, Hit, ModelSpace, StoredImage
from search_service.errors import CollectionNotFound

# Milvus' error code for a query on a collection that is not loaded (merr.ErrCollectionNotLoaded).
COLLECTION_NOT_LOADED = 101
# Milvus evaluates a query in "iterator" mode with results ordered by primary key, which makes
# `pk > last` a correct, resumable page cursor (pymilvus' own query_iterator relies on it).
_ORDERED = {"iterator": "True", "reduce_stop_for_best": "True"}


def _pk(collection: CollectionRecord, external_id: str) -> str:
    return f"{collection.key}/{external_id}"


def _rows_filter(collection: CollectionRecord, external_ids: Sequence[str]) -> str:
    return rows_filter(collection.key, [_pk(collection, eid) for eid in external_ids])


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
                    after_external_id: str = "", with_vectors: bool = False,
                    with_metadata: bool = True) -> list[StoredImage]:
        cursor = literal(_pk(collection, after_external_id))
        fields = (["external_id"] + ([METADATA_FIELD] if with_metadata else [])
                  + ([VECTOR_FIELD] if with_vectors else []))
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
            search_params={"metric_type": "COSINE",
                           "params": self._index.search_params_for(top_k)},
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
        try:
            self._create(name, vectors_schema(model, self._traits.partition_key), VECTOR_FIELD,
                         self._index)
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
    return StoredImage(row["external_id"], row.get(METADATA_FIELD, {}),
                       None if vector is None else np.asarray(vector, dtype=np.float32))
