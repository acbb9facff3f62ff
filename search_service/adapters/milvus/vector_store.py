"""The core's VectorStore port on Milvus: MilvusStore's blocking calls on threads of their
own, with a deadline each and Milvus' errors translated into the domain's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pymilvus import MilvusClient
from pymilvus.client.types import Status
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from search_service.adapters.milvus.config import (
    Flusher,
    IndexConfig,
    SerialWrites,
    ServerTraits,
    check_server_version,
    is_lite,
    open_one_at_a_time,
)
from search_service.adapters.milvus.store import COLLECTION_NOT_LOADED, MilvusStore
from search_service.domain import CollectionRecord, Condition, Hit, ModelSpace, StoredImage
from search_service.errors import MilvusUnavailable

T = TypeVar("T")


def open_store(uri: str, token: str = "", index: IndexConfig | None = None,
               consistency: str = "Session", timeout_s: float = 10.0,
               tls_ca_file: Path | None = None) -> MilvusStore:
    """Opens Milvus Lite (a file path) or a Milvus server (http or https URI, optionally with
    the database as its path) and prepares the registry (blocking). An https URI is TLS,
    verified against `tls_ca_file` when given, else the system's CAs."""
    client: Any = MilvusClient(uri, token=token, **milvus_tls(tls_ca_file))
    flusher = None
    if is_lite(uri):
        client = SerialWrites(client, uri)
        open_one_at_a_time(client)
        traits = ServerTraits.lite()
        flusher = Flusher(client)
    else:
        version = client.get_server_version(timeout=timeout_s)
        check_server_version(version)
        traits = ServerTraits.of(version)
    store = MilvusStore(client, index or IndexConfig.of(None, uri), consistency, traits,
                        timeout_s, flusher)
    store.ensure_registry()
    return store


def milvus_tls(ca_file: Path | None) -> dict[str, str]:
    """pymilvus' one-way TLS option: `server_pem_path` is the CA (or the self-signed server
    certificate) it trusts; "" (its default) means the system's CAs."""
    return {} if ca_file is None else {"server_pem_path": str(ca_file)}


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


class MilvusVectorStore:
    """Implements search_service.ports.VectorStore."""

    def __init__(self, store: MilvusStore, threads: int) -> None:
        self._store = store
        # pymilvus is synchronous: its calls never run on the event loop.
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="milvus")

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

    async def create_collection(self, name: str, model: ModelSpace,
                                description: str) -> CollectionRecord:
        return await self._run(self._store.create_collection, name, model, description)

    async def get_collection(self, name: str) -> CollectionRecord:
        return await self._run(self._store.get_collection, name)

    async def list_collections(self, limit: int, after: str) -> list[CollectionRecord]:
        return await self._run(self._store.list_collections, limit, after)

    async def delete_collection(self, name: str) -> None:
        await self._run(self._store.delete_collection, name)

    async def update_collection(self, record: CollectionRecord) -> None:
        await self._run(self._store.update_collection, record)

    async def delete_space(self, collection: CollectionRecord) -> None:
        await self._run(self._store.delete_space, collection)

    async def counts(self, collections: Sequence[CollectionRecord]) -> list[int]:
        """One count query per collection (Milvus has no grouped count), run side by side."""
        return list(await asyncio.gather(*(self._run(self._store.count, c)
                                           for c in collections)))

    async def upsert(self, collection: CollectionRecord, ids: Sequence[str],
                     vectors: np.ndarray, metadata: Sequence[dict[str, Any]]) -> None:
        await self._run(self._store.upsert, collection, ids, vectors, metadata)

    async def get(self, collection: CollectionRecord, ids: Sequence[str],
                  with_vectors: bool = False, strong: bool = False) -> list[StoredImage]:
        return await self._run(self._store.get, collection, ids, with_vectors, strong)

    async def list_images(self, collection: CollectionRecord, limit: int, after: str,
                          with_vectors: bool = False,
                          with_metadata: bool = True) -> list[StoredImage]:
        return await self._run(self._store.list_images, collection, limit, after, with_vectors,
                               with_metadata)

    async def delete(self, collection: CollectionRecord, ids: Sequence[str]) -> None:
        await self._run(self._store.delete, collection, ids)

    async def search(self, collection: CollectionRecord, queries: np.ndarray, top_k: int,
                     conditions: tuple[Condition, ...] = (),
                     min_similarity: float = -1.0) -> list[list[Hit]]:
        return await self._run(self._store.search, collection, queries, top_k, conditions,
                               min_similarity)

    async def check(self) -> None:
        await self._run(self._store.check)

    async def sweep(self) -> list[str]:
        return await self._run(self._store.sweep)

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._store.close()
