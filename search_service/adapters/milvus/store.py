"""Milvus storage for many tenant collections, through pymilvus' (blocking) MilvusClient.
The layout is in the package's docstring (search_service/adapters/milvus/__init__.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from search_service.adapters.milvus.catalog import Catalog
from search_service.adapters.milvus.config import Flusher, IndexConfig, ServerTraits
from search_service.adapters.milvus.expressions import (
    COLLECTION_FIELD,
    METADATA_FIELD,
    compile_filter,
    literal,
    rows_filter,
)
from search_service.adapters.milvus.layout import SharedLayout, partition_of
from search_service.adapters.milvus.registry import REGISTRY, SWEEP_AFTER_MS, Registry
from search_service.adapters.milvus.schema import VECTOR_FIELD, vectors_collection
from search_service.domain import CollectionRecord, Condition, Hit, ModelSpace, StoredImage
from search_service.errors import CollectionNotFound

# Milvus' error code for a query on a collection that is not loaded (merr.ErrCollectionNotLoaded).
COLLECTION_NOT_LOADED = 101
# ...and for a write into a partition that does not exist (merr.ErrPartitionNotFound).
PARTITION_NOT_FOUND = 200
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
                 timeout_s: float = 10.0, flusher: Flusher | None = None) -> None:
        self._client = client
        # Every call's deadline: a Milvus that stops answering fails it (UNAVAILABLE) and
        # frees its thread, rather than holding both until Milvus answers again.
        self._timeout_s = timeout_s
        self._index = index
        # Session consistency: a search sees this client's own earlier writes (read-your-
        # writes) without paying for Strong consistency on every request.
        self._consistency = consistency
        self._catalog = Catalog(client, index, consistency, traits or ServerTraits(),
                                timeout_s, flusher)
        self._registry = Registry(client, consistency, timeout_s)

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def close(self) -> None:
        self._catalog.close()
        self._client.close()

    def forget_loaded(self) -> None:
        """Loads every collection again on next use (after a Milvus server restart)."""
        self._catalog.forget_loaded()

    def ensure_registry(self) -> None:
        for name, schema in self._registry.schemas().items():
            self._catalog.ensure(name, schema)

    # Collections -------------------------------------------------------------------------

    def create_collection(self, name: str, model: ModelSpace,
                          description: str = "") -> CollectionRecord:
        self._catalog.ensure_vectors(model)
        self._catalog.load_registry()
        record = self._registry.create(name, model, description)
        rows = vectors_collection(model)
        self._catalog.layout(rows).prepare(self._client, rows, record, self._timeout_s)
        self._catalog.partitions.add((rows, record.key))
        return record

    def get_collection(self, name: str) -> CollectionRecord:
        record = self._find(name)
        if record is None:
            raise CollectionNotFound(f"collection {name!r} does not exist")
        return record

    def list_collections(self, limit: int, after: str = "") -> list[CollectionRecord]:
        self._catalog.load_registry()
        self._catalog.catch_up(REGISTRY)
        return self._registry.page(limit, after, _ORDERED)

    def delete_collection(self, name: str) -> None:
        """The name is free at once; the rows go now, and again in `sweep` for any write that
        was still landing."""
        record = self.get_collection(name)
        self._registry.delete(record)
        self._delete_rows(record)
        self._catalog.settle(REGISTRY)

    def sweep(self, now_ms: int | None = None) -> list[str]:
        """Deletes the rows of collections deleted long enough ago that no write begun before
        the deletion can still land, then their tombstones; returns the swept keys."""
        self._catalog.load_registry()
        cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - SWEEP_AFTER_MS
        swept = self._registry.tombstones(older_than_ms=cutoff)
        for revenant in self._registry.revenants({t.key for t in swept}):
            self._registry.delete(revenant)
        for tombstone in swept:
            self._delete_rows(tombstone)
            self._registry.bury(tombstone)
        return [tombstone.key for tombstone in swept]

    def update_collection(self, record: CollectionRecord) -> None:
        self._catalog.load_registry()
        if record.migration is not None:
            for space in (record.migration.source, record.migration.target):
                self._catalog.ensure_vectors(space)
        self._registry.update(record)
        self._catalog.settle(REGISTRY)

    def delete_space(self, record: CollectionRecord) -> None:
        """The collection's rows in the space of `record.model` alone."""
        rows = vectors_collection(record.model)
        if rows not in self._catalog.spaces():
            return
        self._catalog.partitions.discard((rows, record.key))
        self._catalog.load(rows)
        self._catalog.layout(rows).drop(self._client, rows, record, self._timeout_s)
        self._catalog.wrote(rows, 1)
        self._catalog.settle(rows)

    def _delete_rows(self, record: CollectionRecord) -> None:
        """The collection's rows in every space: its model's, and any other kept under its
        key (its copy index)."""
        for rows in self._catalog.spaces():
            self._catalog.partitions.discard((rows, record.key))
            self._catalog.load(rows)
            self._catalog.layout(rows).drop(self._client, rows, record, self._timeout_s)
            self._catalog.wrote(rows, 1)
            self._catalog.settle(rows)

    def check(self) -> None:
        """Raises unless Milvus answers a read of the registry and of every vectors collection
        this store has used, each within the timeout. A restarting server accepts connections
        well before it answers queries, and answers on the registry before a large collection
        is loaded again: SERVING only once every collection a call may touch answers."""
        for name in (REGISTRY, *sorted(self._catalog.used - {REGISTRY})):
            try:
                self._probe(name)
            except MilvusException as err:
                if err.code != COLLECTION_NOT_LOADED:
                    raise
                self._catalog.forget_loaded(name)  # restarted: load again
                self._probe(name)

    def _probe(self, name: str) -> None:
        self._catalog.load(name)
        self._client.query(name, filter="", limit=1, output_fields=[],
                           consistency_level=self._consistency, timeout=self._timeout_s)

    def _find(self, name: str, consistency: str | None = None) -> CollectionRecord | None:
        self._catalog.load_registry()
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
        name = self._catalog.vectors(collection)
        self._upsert(name, collection, rows)
        # Strong: a deletion through another replica is seen too.
        if not self._current(collection):
            self._delete(name, collection, external_ids)
            raise _deleted_meanwhile(collection)

    def _upsert(self, name: str, collection: CollectionRecord, rows: list[dict[str, Any]]
                ) -> None:
        layout = self._catalog.layout(name)
        if layout.partitioned and (name, collection.key) not in self._catalog.partitions:
            # The first write here into this space: make its partition now rather than find
            # it missing (pymilvus logs every refused write as an ERROR, with a traceback).
            if not self._client.has_partition(name, partition_of(collection.key),
                                              timeout=self._timeout_s):
                self._make_partition(name, collection, layout)
            self._catalog.partitions.add((name, collection.key))
        if not self._upsert_into_partition(name, collection, rows, layout):
            # No partition: the collection was deleted, or its creation stopped half-way.
            self._make_partition(name, collection, layout)
            if not self._upsert_into_partition(name, collection, rows, layout):
                raise _deleted_meanwhile(collection)  # dropped again since the check
        self._catalog.wrote(name, len(rows))

    def _make_partition(self, name: str, collection: CollectionRecord,
                        layout: SharedLayout) -> None:
        """The collection's partition, unless the collection is gone."""
        if not self._current(collection):
            raise _deleted_meanwhile(collection)
        layout.prepare(self._client, name, collection, self._timeout_s)

    def _upsert_into_partition(self, name: str, collection: CollectionRecord,
                               rows: list[dict[str, Any]], layout: SharedLayout) -> bool:
        """False when the collection's partition does not exist."""
        try:
            self._client.upsert(name, rows, timeout=self._timeout_s, **layout.writes(collection))
        except MilvusException as err:
            if not _partition_missing(err, layout):
                raise
            return False
        return True

    def _current(self, collection: CollectionRecord) -> bool:
        current = self._find(collection.name, "Strong")
        return current is not None and current.key == collection.key

    def get(self, collection: CollectionRecord, external_ids: Sequence[str],
            with_vectors: bool = False, strong: bool = False) -> list[StoredImage]:
        """`strong`: Strong consistency (every acknowledged write, whichever client made it),
        not the store's own (Session: this client's writes)."""
        fields = ["external_id", METADATA_FIELD, "updated_at_ms"] + (
            [VECTOR_FIELD] if with_vectors else [])
        name = self._catalog.vectors(collection)
        rows = self._client.query(name, filter=_rows_filter(collection, external_ids),
                                  output_fields=fields,
                                  consistency_level="Strong" if strong else self._consistency,
                                  timeout=self._timeout_s,
                                  **self._catalog.layout(name).reads(collection))
        found = {row["external_id"]: _image(row) for row in rows}
        return [found[eid] for eid in external_ids if eid in found]

    def list_images(self, collection: CollectionRecord, limit: int,
                    after_external_id: str = "", with_vectors: bool = False,
                    with_metadata: bool = True) -> list[StoredImage]:
        cursor = literal(_pk(collection, after_external_id))
        fields = (["external_id", "updated_at_ms"] + ([METADATA_FIELD] if with_metadata else [])
                  + ([VECTOR_FIELD] if with_vectors else []))
        name = self._catalog.vectors(collection)
        self._catalog.catch_up(name)
        layout = self._catalog.layout(name)
        rows = self._client.query(
            name, filter=f"{compile_filter(collection.key)} and pk > {cursor}",
            output_fields=fields, limit=limit, consistency_level=self._consistency,
            **_ORDERED, timeout=self._timeout_s, **layout.reads(collection))
        return [_image(row) for row in rows]

    def count(self, collection: CollectionRecord) -> int:
        name = self._catalog.vectors(collection)
        layout = self._catalog.layout(name)
        rows = self._client.query(name, filter=compile_filter(collection.key),
                                  output_fields=["count(*)"],
                                  consistency_level=self._consistency, timeout=self._timeout_s,
                                  **layout.reads(collection))
        return int(rows[0]["count(*)"])

    def delete(self, collection: CollectionRecord, external_ids: Sequence[str]) -> int:
        name = self._catalog.vectors(collection)
        deleted = self._delete(name, collection, external_ids)
        self._catalog.settle(name)
        return deleted

    def _delete(self, name: str, collection: CollectionRecord, external_ids: Sequence[str]
                ) -> int:
        layout = self._catalog.layout(name)
        try:
            result = self._client.delete(name, filter=_rows_filter(collection, external_ids),
                                         timeout=self._timeout_s, **layout.writes(collection))
        except MilvusException as err:
            if not _partition_missing(err, layout):
                raise
            return 0  # the collection's partition, and every row in it, is gone
        self._catalog.wrote(name, len(external_ids))
        return int(result.get("delete_count", 0)) if isinstance(result, dict) else 0

    def search(self, collection: CollectionRecord, queries: np.ndarray, top_k: int,
               conditions: tuple[Condition, ...] = (),
               min_similarity: float = -1.0) -> list[list[Hit]]:
        name = self._catalog.vectors(collection)
        layout = self._catalog.layout(name)
        results = self._client.search(
            name, data=[q.tolist() for q in queries],
            anns_field=VECTOR_FIELD, limit=top_k, **layout.reads(collection),
            filter=compile_filter(collection.key, conditions),
            output_fields=["external_id", METADATA_FIELD],
            search_params={"metric_type": "COSINE",
                           "params": self._index.search_params_for(top_k)},
            consistency_level=self._consistency, timeout=self._timeout_s)
        return [[Hit(hit["entity"]["external_id"], float(hit["distance"]),
                     hit["entity"][METADATA_FIELD])
                 for hit in hits if float(hit["distance"]) >= min_similarity]
                for hits in results]


def _partition_missing(err: MilvusException, layout: SharedLayout) -> bool:
    return layout.partitioned and err.code == PARTITION_NOT_FOUND


def _deleted_meanwhile(collection: CollectionRecord) -> CollectionNotFound:
    return CollectionNotFound(f"collection {collection.name!r} was deleted while these images "
                              "were being added; none of them was stored")


def _image(row: dict[str, Any]) -> StoredImage:
    vector = row.get(VECTOR_FIELD)
    return StoredImage(row["external_id"], row.get(METADATA_FIELD, {}),
                       None if vector is None else np.asarray(vector, dtype=np.float32),
                       int(row.get("updated_at_ms") or 0))
