"""Recall of the default HNSW parameters on a Milvus server, against exact search.

    scripts/loopback-only.sh .venv/bin/python -m bench.recall_bench [--count 100000]

Loads `count` clustered unit vectors (as real embeddings are: 500 centres sharing a common
direction, 512-d or --dim)
through the service's own store adapter into the PyPI Milvus 2.3.5 server, with the service's
index (HNSW, M=16, efConstruction=200), flushes so that the segments are indexed, then for
each search `ef` (the service's default is 128) and top_k compares the server's answers for
held-out queries with numpy's exact cosine top_k: recall@k and p50 latency, side by side.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pymilvus import MilvusClient

from search_service.adapters.milvus.config import IndexConfig
from search_service.adapters.milvus.schema import vectors_collection
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
from tests.milvus_server import MilvusServer

QUERIES = 100


def clustered(count: int, dim: int, rng: np.random.Generator, centres: np.ndarray
              ) -> np.ndarray:
    """Unit vectors around unit-norm centres that share one direction, as CLIP's embeddings
    do: unrelated images at cosine ~0.25, images of one cluster at ~0.5 (noise of norm 1)."""
    picked = centres[rng.integers(0, len(centres), count)]
    vectors = picked + rng.standard_normal((count, dim)) / np.sqrt(dim)
    unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
        np.float32)
    return unit


def centres_of(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    shared = rng.standard_normal(dim)
    own = rng.standard_normal((count, dim))
    centres = 0.6 * shared / np.linalg.norm(shared) + 0.8 * own / np.linalg.norm(
        own, axis=1, keepdims=True)
    unit: np.ndarray = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    return unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    centres = centres_of(500, args.dim, rng)
    data = clustered(args.count, args.dim, rng, centres)
    queries = clustered(QUERIES, args.dim, rng, centres)
    model = ModelSpace("sha256:" + "ac" * 32, args.dim, "recall-bench")
    work = Path(tempfile.mkdtemp(prefix="recall-bench-"))
    server = MilvusServer(work / "milvus")
    server.start()
    try:
        load(server.uri, model, data)
        print(f"{args.count} clustered {args.dim}-d vectors, HNSW M=16 efConstruction=200, "
              f"{QUERIES} held-out queries\n")
        print("| top_k | ef | recall@k | p50 ms |\n| --- | --- | --- | --- |")
        for top_k in (10, 100, 1000):
            exact = np.argsort(-(queries @ data.T), axis=1)[:, :top_k]
            # The store raises ef to top_k (Milvus needs ef >= top_k).
            for ef in sorted({max(ef, top_k) for ef in (16, 32, 64, 128, 256, 512)}):
                recall, p50 = measure(server.uri, model, queries, exact, top_k, ef)
                print(f"| {top_k} | {ef} | {recall:.3f} | {p50:.1f} |", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def load(uri: str, model: ModelSpace, data: np.ndarray) -> None:
    store = open_store(uri)
    record = store.create_collection("recall", model)
    for at in range(0, len(data), 2000):
        chunk = data[at:at + 2000]
        store.upsert(record, [f"{at + i:07d}" for i in range(len(chunk))], chunk,
                     [{}] * len(chunk))
    client = MilvusClient(uri)
    name = vectors_collection(model)
    client.flush(name)
    # Until its index is built, a sealed segment is searched exactly: wait, or the figures
    # measure brute force.
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        index = client.describe_index(name, "vector")
        if int(index.get("indexed_rows", 0)) >= len(data):
            break
        time.sleep(2)
    else:
        raise SystemExit(f"the index was not built within 20 minutes: {index}")
    client.close()
    store.close()


def measure(uri: str, model: ModelSpace, queries: np.ndarray, exact: np.ndarray, top_k: int,
            ef: int) -> tuple[float, float]:
    store = open_store(uri, index=IndexConfig.of(None, uri, search_ef=ef))
    record = store.get_collection("recall")
    found, times = 0, []
    for query, truth in zip(queries, exact, strict=True):
        started = time.perf_counter()
        (hits,) = store.search(record, query[None, :], top_k)
        times.append((time.perf_counter() - started) * 1000)
        found += len({int(h.external_id) for h in hits} & set(truth.tolist()))
    store.close()
    return found / exact.size, float(np.median(times))


if __name__ == "__main__":
    main()
