"""The Milvus collections a store uses: created once, loaded on first use (and again after a
server restart), each with the layout its tenants' rows are kept in (layout.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from search_service.adapters.milvus.config import Flusher, IndexConfig, ServerTraits
from search_service.adapters.milvus.layout import SharedLayout, layout_of
from search_service.adapters.milvus.registry import CLAIMS, REGISTRY
from search_service.adapters.milvus.schema import (
    VECTOR_FIELD,
    VECTORS_PREFIX,
    vectors_collection,
    vectors_schema,
)
from search_service.domain import CollectionRecord, ModelSpace

# How long a collection another replica is creating may take to appear with its index.
_CREATOR_WAIT_S = 30.0


class Catalog:
    def __init__(self, client: MilvusClient, index: IndexConfig, consistency: str,
                 traits: ServerTraits, timeout_s: float, flusher: Flusher | None) -> None:
        self._client = client
        self._index = index
        self._consistency = consistency
        self._traits = traits
        self._timeout_s = timeout_s
        # Creating a collection loads it; loading a large one (after a Milvus restart) takes
        # longer than any other call.
        self._load_timeout_s = max(timeout_s, 120.0)
        self._flusher = flusher
        self._loaded: set[str] = set()
        # Every collection ever loaded, for the health check (_loaded empties on a restart).
        self.used: set[str] = set()
        self._layouts: dict[str, SharedLayout] = {}
        # (Milvus collection, collection key) whose partition this store has seen exist.
        self.partitions: set[tuple[str, str]] = set()
        self._creating = threading.Lock()

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.close()

    def ensure(self, name: str, schema: Any) -> None:
        """Creates a small collection (the registry's) unless it exists, and loads it."""
        if not self._client.has_collection(name, timeout=self._timeout_s):
            self._create(name, schema, "placeholder",
                         IndexConfig(index_type="AUTOINDEX", build_params={}))
        self.load(name)

    def forget_loaded(self, name: str | None = None) -> None:
        """Loads the collection (or every one) again on next use (after a server restart)."""
        if name is None:
            self._loaded.clear()
        else:
            self._loaded.discard(name)

    def load_registry(self) -> None:
        self.load(REGISTRY)
        self.load(CLAIMS)

    def catch_up(self, name: str) -> None:
        """Makes the next ordered (iterator-mode) query see this client's writes.

        pymilvus sends no session timestamp with iterator-mode queries, so on a server they
        read whatever the query nodes have applied (a fresh write was missed every time on
        2.3.5). A plain query at the store's consistency first waits for that timestamp."""
        self._client.query(name, filter="", limit=1, output_fields=[],
                           consistency_level=self._consistency, timeout=self._timeout_s)

    def settle(self, name: str) -> None:
        """Returns once this client's deletes in `name` are visible to its Session reads."""
        if not self._traits.deletes_visible_at_once:
            # A Strong read waits until the query nodes have applied every earlier write.
            self._client.query(name, filter="", limit=1, output_fields=[],
                               consistency_level="Strong", timeout=self._timeout_s)

    def wrote(self, name: str, rows: int) -> None:
        if self._flusher is not None:
            self._flusher.wrote(name, rows)

    def layout(self, name: str) -> SharedLayout:
        """Read from the collection's schema once: files written before partitions keep theirs."""
        if name not in self._layouts:
            description = self._client.describe_collection(name, timeout=self._timeout_s)
            self._layouts[name] = layout_of(description, self._traits.tenant_partitions)
        return self._layouts[name]

    def vectors(self, collection: CollectionRecord) -> str:
        """The Milvus collection of the record's space, made on first use: a collection's
        rows may live in more spaces than its model's (search_service.copy_index)."""
        name = vectors_collection(collection.model)
        if name not in self._loaded:
            self.ensure_vectors(collection.model)
        return name

    def spaces(self) -> list[str]:
        """Every vectors collection there is, whichever space and whoever made it."""
        return [name for name in self._client.list_collections(timeout=self._timeout_s)
                if name.startswith(VECTORS_PREFIX)]

    def ensure_vectors(self, model: ModelSpace) -> None:
        name = vectors_collection(model)
        with self._creating:  # two creators in this process must not both create it
            if not self._client.has_collection(name, timeout=self._timeout_s):
                self._create_vectors(name, model)
            elif name not in self._loaded and not self._wait_until_indexed(name):
                # Its creator stopped between the collection and its index: finish its work.
                self._add_index(name, VECTOR_FIELD, self._index)
        self.load(name)

    def _create_vectors(self, name: str, model: ModelSpace) -> None:
        try:
            self._create(name, vectors_schema(model, self._traits.partition_key), VECTOR_FIELD,
                         self._index)
        except (MilvusException, FileExistsError) as err:
            # Another replica (or another client of this Lite file) is creating it: its
            # collection, then its index, appear in turn (Lite's folder before its entry).
            if self._wait_until_indexed(name):
                return
            if not self._client.has_collection(name, timeout=self._timeout_s):
                raise err
            self._add_index(name, VECTOR_FIELD, self._index)

    def _wait_until_indexed(self, name: str) -> bool:
        """Whether `name` exists with its index, waiting as long as a creator may take."""
        deadline = time.monotonic() + _CREATOR_WAIT_S
        while True:
            if (self._client.has_collection(name, timeout=self._timeout_s)
                    and self._client.list_indexes(name, timeout=self._timeout_s)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _create(self, name: str, schema: Any, vector_field: str, index: IndexConfig) -> None:
        self._client.create_collection(name, schema=schema, consistency_level=self._consistency,
                                       timeout=self._load_timeout_s)
        self._add_index(name, vector_field, index)
        self._client.load_collection(name, timeout=self._load_timeout_s)

    def _add_index(self, name: str, vector_field: str, index: IndexConfig) -> None:
        params = self._client.prepare_index_params()
        params.add_index(vector_field, index_type=index.index_type, metric_type="COSINE",
                         params=index.build_params)
        try:
            self._client.create_index(name, params, timeout=self._load_timeout_s,
                                      sync=self._traits.waits_for_index)
        except MilvusException as err:
            # Another creator's index, not yet listed (two clients of one Lite file): done.
            if "index already exists" not in str(err):
                raise

    def load(self, name: str) -> None:
        # A reopened Milvus Lite file (or a restarted server) has its collections released.
        if name not in self._loaded:
            self._client.load_collection(name, timeout=self._load_timeout_s)
            self._loaded.add(name)
            self.used.add(name)
