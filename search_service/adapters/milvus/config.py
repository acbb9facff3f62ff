"""What kind of Milvus the store talks to, and how its vectors are indexed."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pymilvus import MilvusClient

MIN_SERVER_VERSION = (2, 3)

log = logging.getLogger(__name__)


def is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://"))


@dataclass(frozen=True)
class IndexConfig:
    """The vector index and its parameters; only those of its own type are sent."""

    index_type: str = "HNSW"
    build_params: dict[str, Any] = field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    search_params: dict[str, Any] = field(default_factory=lambda: {"ef": 128})

    @classmethod
    def of(cls, index_type: str | None, uri: str, hnsw_m: int = 16,
           hnsw_ef_construction: int = 200, search_ef: int = 128) -> IndexConfig:
        """HNSW on a server, AUTOINDEX on Milvus Lite, unless `index_type` says otherwise.
        Other types (IVF_FLAT, DISKANN...) get Milvus' own default parameters."""
        chosen = index_type or ("AUTOINDEX" if is_lite(uri) else "HNSW")
        if chosen.upper() == "AUTOINDEX" and is_lite(uri):
            # Lite's AUTOINDEX is faiss HNSW searching at ef 64: a top_k over 64 came back
            # short once a collection was flushed (300 images, top_k 1000: ~220).
            return cls(chosen, {}, {"ef": search_ef})
        if chosen.upper() != "HNSW":
            return cls(chosen, {}, {})
        return cls(chosen, {"M": hnsw_m, "efConstruction": hnsw_ef_construction},
                   {"ef": search_ef})

    def search_params_for(self, top_k: int) -> dict[str, Any]:
        """HNSW needs ef >= top_k: Milvus refuses (or truncates to ef) a smaller one."""
        params = dict(self.search_params)
        if "ef" in params:
            params["ef"] = max(int(params["ef"]), top_k)
        return params


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
    # New vectors collections keep each tenant collection in a partition of its own
    # (layout.PartitionLayout) rather than behind a partition key: Milvus Lite.
    tenant_partitions: bool = False
    # Creating an index can wait for it to be built. Lite builds at flush and has no
    # AllocTimestamp, which pymilvus' wait calls: every new collection logged an ERROR
    # traceback that a new user reads as a broken install.
    waits_for_index: bool = True

    @classmethod
    def lite(cls) -> ServerTraits:
        return cls(partition_key=False, tenant_partitions=True, waits_for_index=False)

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


def open_one_at_a_time(client: Any) -> None:
    """Opens every collection of a Milvus Lite file, one after the other, before any call can
    race for them. Lite 3.2 opens a collection on first use without a lock, so concurrent first
    uses each open their own instance - its own memory table, write-ahead log file and
    sequence numbers - and the writes of all but one are lost (found by tests/faults: up to 48
    acknowledged images missing after a restart under load)."""
    for name in client.list_collections():
        client.describe_collection(name)


class SerialWrites:
    """A Milvus Lite client whose writes run one at a time.

    Milvus Lite 3.2's write-ahead log interleaves the record batches of concurrent writers;
    after a crash its recovery stops at the first batch that does not validate and drops every
    write after it, acknowledged or not (4 threads upserting, then SIGKILL: 30 of 1200 rows
    came back). Lite runs in this process under the GIL, so serial writes cost little.
    """

    _WRITES = frozenset({"insert", "upsert", "delete", "flush", "create_partition",
                         "drop_partition"})
    # One lock per file: every client of one Lite file in this process talks to the same
    # in-process Lite server (pymilvus keeps one per path).
    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _locks_lock = threading.Lock()

    def __init__(self, client: MilvusClient, path: str) -> None:
        self._client = client
        with self._locks_lock:
            self._lock = self._locks.setdefault(os.path.abspath(path), threading.Lock())

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._WRITES:
            return attribute

        def serially(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)
        return serially


class Flusher:
    """Flushes Milvus Lite collections soon after writes to them pause, or every `max_rows`.

    Lite keeps unflushed rows in a memory table that every search scans by brute force, in
    Python, and flushes by itself only at 128 MB (a search over 10k growing rows: 138 ms;
    flushed: 28 ms; bench/lite_bench.py). A flush goes through SerialWrites like any write.
    """

    def __init__(self, client: Any, idle_s: float = 1.0, max_rows: int = 4096,
                 timeout_s: float = 120.0) -> None:
        self._client = client
        self._idle_s, self._max_rows, self._timeout_s = idle_s, max_rows, timeout_s
        self._pending: dict[str, tuple[int, float]] = {}  # name -> (rows, last write)
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lite-flush", daemon=True)
        self._thread.start()

    def wrote(self, name: str, rows: int) -> None:
        with self._wake:
            pending, _ = self._pending.get(name, (0, 0.0))
            self._pending[name] = (pending + rows, time.monotonic())
            self._wake.notify()

    def close(self) -> None:
        """Flushes what is pending (the next open starts fast), then stops."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _due(self) -> tuple[list[str], float | None]:
        now, due, wait = time.monotonic(), [], None
        for name, (rows, at) in self._pending.items():
            left = at + self._idle_s - now
            if self._closed or rows >= self._max_rows or left <= 0:
                due.append(name)
            else:
                wait = left if wait is None else min(wait, left)
        return due, wait

    def _next(self) -> list[str]:
        with self._wake:
            due, wait = self._due()
            while not due and not self._closed:
                self._wake.wait(wait)
                due, wait = self._due()
            for name in due:
                del self._pending[name]
            return due

    def _run(self) -> None:
        while due := self._next():
            for name in due:
                try:
                    self._client.flush(name, timeout=self._timeout_s)
                except Exception:  # the next write schedules it again
                    log.warning("flushing Milvus Lite collection %s failed", name,
                                exc_info=True)
