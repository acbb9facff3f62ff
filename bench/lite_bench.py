"""Milvus Lite's layouts against each other and against a Milvus server, side by side in one run.

    scripts/loopback-only.sh .venv/bin/python -m bench.lite_bench [--sizes 10000 100000]

Every store is the service's own adapter (MilvusStore, the code a search request runs), on
the same clustered 64-d unit vectors (the bundled model's width; real embeddings cluster).
- lite, shared: the layout before partitions - one partition-key space for every tenant,
  never flushed by the service (Lite flushes by itself at 128 MB).
- lite, partitioned: a partition per tenant collection, flushed once writes pause (1 s) or
  every 4,096 rows (search_service/adapters/milvus/layout.py, config.Flusher).
- server: the PyPI Milvus 2.3.5 standalone server the tests use, HNSW (M=16, ef=128).
For each size: bulk-load rate, then search p50 for the big tenant and for a 512-vector tenant
beside it, right after the bulk load and after 3 s idle (on the server: after a flush, which
it does by itself as segments fill or age); the 512-vector tenant also alone in a store of
its own.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from search_service.adapters.milvus.config import IndexConfig, SerialWrites, ServerTraits
from search_service.adapters.milvus.schema import vectors_collection, vectors_schema
from search_service.adapters.milvus.store import MilvusStore
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import CollectionRecord, ModelSpace
from tests.milvus_server import MilvusServer

MODEL = ModelSpace("sha256:" + "be" * 32, 64, "bench")
SMALL = 512
BATCH = 1000
QUERIES = 51


def clustered(count: int, seed: int) -> np.ndarray:
    """Unit vectors around 200 centres, as embeddings of real collections are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, MODEL.dimension))
    vectors = centres[rng.integers(0, 200, count)] + 0.6 * rng.standard_normal(
        (count, MODEL.dimension))
    unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
        np.float32)
    return unit


def shared_lite(path: str) -> MilvusStore:
    """A Lite file in the layout before partitions, without the flusher."""
    client = MilvusClient(path)
    params = client.prepare_index_params()
    params.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(vectors_collection(MODEL), index_params=params,
                             schema=vectors_schema(MODEL, partition_key=True))
    store = MilvusStore(SerialWrites(client, path), IndexConfig.of(None, path), "Session",
                        ServerTraits.lite())
    store.ensure_registry()
    return store


def load(store: MilvusStore, name: str, vectors: np.ndarray) -> tuple[CollectionRecord, float]:
    record = store.create_collection(name, MODEL)
    started = time.perf_counter()
    for at in range(0, len(vectors), BATCH):
        chunk = vectors[at:at + BATCH]
        store.upsert(record, [f"{at + i:07d}" for i in range(len(chunk))], chunk,
                     [{"label": "x"}] * len(chunk))
    return record, len(vectors) / (time.perf_counter() - started)


def p50_ms(search: Callable[[np.ndarray], Any], queries: np.ndarray) -> float:
    search(queries[0])
    times = []
    for query in queries:
        started = time.perf_counter()
        search(query)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def searcher(store: MilvusStore, record: CollectionRecord) -> Callable[[np.ndarray], Any]:
    return lambda query: store.search(record, query[None, :], 10)


def measure(label: str, store: MilvusStore, size: int, settle: Callable[[], None]
            ) -> dict[str, float]:
    big, rate = load(store, "big", clustered(size, seed=1))
    small, _ = load(store, "small", clustered(SMALL, seed=2))
    queries = clustered(QUERIES, seed=3)
    row = {"ingest": rate}
    for phase in ("after ingest", "after idle"):
        if phase == "after idle":
            settle()
        for tenant, record in (("big", big), ("small", small)):
            row[f"{tenant} {phase}"] = p50_ms(searcher(store, record), queries)
    print(f"| {label} | {size} | {rate:,.0f} rows/s | "
          + " | ".join(f"{row[k]:.1f}" for k in ("big after ingest", "big after idle",
                                                  "small after ingest", "small after idle"))
          + " |", flush=True)
    return row


def small_alone(store: MilvusStore, settle: Callable[[], None]) -> float:
    small, _ = load(store, "small", clustered(SMALL, seed=2))
    settle()
    return p50_ms(searcher(store, small), clustered(QUERIES, seed=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lite-bench-"))
    server = MilvusServer(work / "milvus")
    server.start()
    admin = MilvusClient(server.uri)


    def server_flush(uri: str) -> Callable[[], None]:
        def settle() -> None:
            client = MilvusClient(uri)
            client.flush(vectors_collection(MODEL))
            client.close()
        return settle

    print("| store | vectors in the big tenant | bulk load | big: p50 ms after ingest | "
          "big: after idle | 512 beside it: after ingest | 512 beside it: after idle |\n"
          "| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    results: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for size in args.sizes:
            shared = shared_lite(str(work / f"shared-{size}.db"))
            results["shared", size] = measure("lite, shared", shared, size,
                                              lambda: time.sleep(3))
            shared.close()
            parted = open_store(str(work / f"parted-{size}.db"))
            results["parted", size] = measure("lite, partitioned", parted, size,
                                              lambda: time.sleep(3))
            parted.close()
            admin.create_database(f"bench{size}")
            uri = f"{server.uri}/bench{size}"
            remote = open_store(uri)
            results["server", size] = measure("server 2.3.5", remote, size, server_flush(uri))
            remote.close()
        alone = open_store(str(work / "alone.db"))
        small_alone_ms = small_alone(alone, lambda: time.sleep(3))
        alone.close()
        summarise(results, args.sizes, small_alone_ms)
    finally:
        admin.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def summarise(results: dict[tuple[str, int], dict[str, float]], sizes: list[int],
              small_alone_ms: float) -> None:
    print(f"\n512 vectors alone in a partitioned Lite file, after idle: {small_alone_ms:.1f} ms")
    print("\n| ratio | " + " | ".join(f"{s}" for s in sizes) + " |\n| --- |"
          + " --- |" * len(sizes))
    for label, store, key in (
            ("partitioned / shared, big after ingest", "parted", "big after ingest"),
            ("partitioned / shared, big after idle", "parted", "big after idle"),
            ("partitioned / shared, 512 beside big after idle", "parted", "small after idle")):
        print(f"| {label} | " + " | ".join(
            f"{results[store, s][key] / results['shared', s][key]:.3g}x" for s in sizes) + " |")
    for key in ("big after ingest", "big after idle"):
        print(f"| partitioned Lite / server, {key} | " + " | ".join(
            f"{results['parted', s][key] / results['server', s][key]:.1f}x" for s in sizes)
            + " |")
    print("| 512 beside big / 512 alone, partitioned, after idle | " + " | ".join(
        f"{results['parted', s]['small after idle'] / small_alone_ms:.2f}x" for s in sizes)
        + " |")
    print("| bulk load, partitioned / shared | " + " | ".join(
        f"{results['parted', s]['ingest'] / results['shared', s]['ingest']:.2f}x"
        for s in sizes) + " |")


if __name__ == "__main__":
    main()
