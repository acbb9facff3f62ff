"""Milvus memory per stored image, for deploy/README.md's sizing: the service's own schema and
index (HNSW, M=16, efConstruction=200) on a real Milvus server (PyPI milvus 2.3.5).

    scripts/loopback-only.sh .venv/bin/python -m bench.milvus_memory --count 200000

Measures the resident memory of the whole Milvus process group (every component of the
standalone server) with one empty collection loaded, then after adding `count` 512-d vectors
with typical metadata, flushing, indexing and loading; prints the difference per image.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from search_service.adapters.milvus.config import IndexConfig
from search_service.adapters.milvus.schema import vectors_collection
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
from tests.milvus_server import MilvusServer

PAGE = os.sysconf("SC_PAGE_SIZE")


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in the process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat, the process group
                total += int((entry / "statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def settle(server_pgid: int, seconds: float = 20) -> int:
    """RSS once it stops moving (index builds and compactions finish in the background)."""
    time.sleep(seconds)
    return group_rss(server_pgid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--dimension", type=int, default=512)
    args = parser.parse_args()
    model = ModelSpace("00000000bench000", args.dimension, "random")
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        server = MilvusServer(Path(tmp) / "milvus")
        server.start()
        pgid = server._process.pid  # the group leader: the wrapper
        try:
            index = IndexConfig("HNSW", {"M": 16, "efConstruction": 200}, {"ef": 128})
            store = open_store(server.uri, "", index)
            record = store.create_collection("photos", model)
            store.search(record, rng.random((1, args.dimension), np.float32), 1)
            before = settle(pgid)
            started = time.perf_counter()
            for start_at in range(0, args.count, 5000):
                n = min(5000, args.count - start_at)
                vectors = rng.standard_normal((n, args.dimension)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                ids = [f"IMG_{start_at + i:08d}.jpg" for i in range(n)]
                store.upsert(record, ids, vectors,
                             [{"label": "dog", "path": f"/photos/2026/{i}.jpg"} for i in ids])
            store._client.flush(vectors_collection(model))  # seal the segments
            store.search(record, rng.random((1, args.dimension), np.float32), 1)
            after = settle(pgid, 60)
            print(f"{args.count} images of {args.dimension}-d added in "
                  f"{time.perf_counter() - started:.0f} s; Milvus RSS {before / 2**20:.0f} MiB "
                  f"-> {after / 2**20:.0f} MiB: {(after - before) / args.count:.0f} bytes per "
                  f"image, {(after - before) / args.count * 1e6 / 2**30:.2f} GiB per million")
            store.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
