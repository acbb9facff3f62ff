"""Search-service benchmark on Milvus Lite or a Milvus server: every comparison measured side
by side in one run.

    python -m bench.search_bench [--images N] [--big N] [--milvus lite|server]

`--milvus server` starts the PyPI milvus standalone server (2.3.5) in a temporary folder; run
it inside scripts/loopback-only.sh, as the tests do.

Both services run as their own processes (the real entry points), as in production.
1. Ingest: images/s through IngestImages (decode, embed, insert overlapping) vs the embedder
   alone (StreamEmbedImages on the same images).
2. Text search latency p50/p99 through the service vs the sum of its parts: EmbedTexts on the
   embedder plus a Milvus search on an identical collection opened by this process.
3. Text search QPS at concurrency 1, 8 and 32.
Sections 2-3 run on the small ingested collection and on one of --big random vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
from pymilvus import MilvusClient

from imagesearch import synthetic
from imagesearch.demo import start, wait_serving
from imagesearch.embedder.v1 import embedder_pb2 as epb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.adapters.milvus.config import is_lite
from search_service.adapters.milvus.schema import vectors_collection
from search_service.adapters.milvus.store import MilvusStore
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
from tests.milvus_server import MilvusServer

QUERY = "two blue squares on a gray background"


def images(count: int) -> list[bytes]:
    rng = random.Random(1)
    out = []
    for _ in range(count):
        image = synthetic.render(synthetic.random_scene(rng), 128, rng)
        path = Path(tempfile.mkstemp(suffix=".jpg")[1])
        image.save(path, "JPEG", quality=90)
        out.append(path.read_bytes())
        path.unlink()
    return out


async def embed_rate(stub: embedder_pb2_grpc.EmbedderServiceStub, data: list[bytes]) -> float:
    async def requests() -> AsyncIterator[epb.StreamEmbedImagesRequest]:
        for i, d in enumerate(data):
            yield epb.StreamEmbedImagesRequest(id=str(i), image=epb.ImageInput(data=d))

    started = time.perf_counter()
    _ = [r async for r in stub.StreamEmbedImages(requests())]
    return len(data) / (time.perf_counter() - started)


async def ingest_rate(stub: search_pb2_grpc.SearchServiceStub, data: list[bytes]) -> float:
    await stub.CreateCollection(pb.CreateCollectionRequest(name="bench"))

    async def requests() -> AsyncIterator[pb.IngestImagesRequest]:
        for i, d in enumerate(data):
            yield pb.IngestImagesRequest(collection="bench", image=pb.NewImage(id=f"{i:06d}",
                                                                               data=d))

    started = time.perf_counter()
    acks = [r async for r in stub.IngestImages(requests())]
    assert all(a.status.code == 0 for a in acks)
    return len(data) / (time.perf_counter() - started)


async def latencies(call: Callable[[], Awaitable[object]], count: int) -> np.ndarray:
    await call()
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return np.asarray(out)


async def qps(call: Callable[[], Awaitable[object]], total: int, concurrency: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def latency_rows(label: str, name: str, search: search_pb2_grpc.SearchServiceStub,
                       embedder: embedder_pb2_grpc.EmbedderServiceStub,
                       store: MilvusStore, n: int = 100) -> None:
    text = epb.EmbedTextsRequest(texts=[epb.TextInput(text=QUERY)])
    request = pb.SearchRequest(collection=name, top_k=10, queries=[pb.Query(text=QUERY)])
    query = np.asarray((await embedder.EmbedTexts(text)).results[0].embedding.values)[None, :]
    record = store.get_collection(name)
    service = await latencies(lambda: search.Search(request), n)
    embed = await latencies(lambda: embedder.EmbedTexts(text), n)
    milvus = await latencies(lambda: asyncio.to_thread(store.search, record, query, 10), n)
    parts = np.percentile(embed, 50) + np.percentile(milvus, 50)
    print(f"| {label}: text search through the service | p50 {np.percentile(service, 50):.1f} ms"
          f", p99 {np.percentile(service, 99):.1f} ms | overhead vs parts (embed p50 "
          f"{np.percentile(embed, 50):.1f} + Milvus p50 {np.percentile(milvus, 50):.1f} ms): "
          f"{np.percentile(service, 50) - parts:+.1f} ms p50 |", flush=True)
    for concurrency in (1, 8, 32):
        rate = await qps(lambda: search.Search(request), 200, concurrency)
        print(f"| {label}: text search, concurrency {concurrency} | {rate:.0f} QPS | |",
              flush=True)


def load_big(uri: str, model: ModelSpace, vectors: np.ndarray) -> MilvusStore:
    """Raw vectors cannot enter through the API (it embeds images): load them before the
    service opens the database (Milvus Lite allows one process per file)."""
    store = open_store(uri)
    record = store.create_collection("big", model)
    for start_at in range(0, len(vectors), 5000):
        chunk = vectors[start_at:start_at + 5000]
        store.upsert(record, [f"{start_at + i:07d}" for i in range(len(chunk))], chunk,
                     [{} for _ in range(len(chunk))])
    if not is_lite(uri):
        # Seal the segments so that the server builds their HNSW index, as it would in use.
        client = MilvusClient(uri)
        client.flush(vectors_collection(model))
        client.close()
    return store


def random_vectors(count: int, model: ModelSpace) -> np.ndarray:
    vectors = np.random.default_rng(0).standard_normal((count, model.dimension))
    unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
        np.float32)
    return unit


def _load(uri: str, model: ModelSpace, count: int) -> None:
    load_big(uri, model, random_vectors(count, model)).close()


async def model_of(embedder_at: str) -> ModelSpace:
    await wait_serving(embedder_at)
    async with grpc.aio.insecure_channel(embedder_at) as channel:
        info = (await embedder_pb2_grpc.EmbedderServiceStub(channel).GetModelInfo(
            epb.GetModelInfoRequest())).model
    return ModelSpace(info.fingerprint, info.embedding_dim, info.model_name)


async def run(args: argparse.Namespace, mirror_store: MilvusStore, model: ModelSpace,
              embedder_at: str, search_at: str) -> None:
    await wait_serving(search_at)
    async with grpc.aio.insecure_channel(embedder_at) as e_ch, \
            grpc.aio.insecure_channel(search_at) as s_ch:
        embedder = embedder_pb2_grpc.EmbedderServiceStub(e_ch)
        search = search_pb2_grpc.SearchServiceStub(s_ch)
        data = images(args.images)
        alone = await embed_rate(embedder, data)
        through = await ingest_rate(search, data)
        print("| measurement | result | comparison |\n| --- | --- | --- |")
        print(f"| ingest {len(data)} JPEGs end to end (IngestImages) | {through:.0f} img/s | "
              f"{through / alone:.2f}x of the embedder alone ({alone:.0f} img/s) |", flush=True)
        stored = await search.GetImages(pb.GetImagesRequest(
            collection="bench", ids=[f"{i:06d}" for i in range(len(data))], include_vectors=True))
        vectors = np.asarray([list(i.vector) for i in stored.images], dtype=np.float32)
        record = mirror_store.create_collection("bench", model)
        mirror_store.upsert(record, [i.id for i in stored.images], vectors,
                            [{} for _ in stored.images])
        await latency_rows(f"{len(data)} images", "bench", search, embedder, mirror_store)
        await latency_rows(f"{args.big} vectors", "big", search, embedder, mirror_store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--milvus", choices=("lite", "server"), default="lite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="search-bench-"))
    env = {"EMBEDDER_LOG_FORMAT": "json", "SEARCH_LOG_FORMAT": "json"}
    embedder, embedder_at = start("imagesearch-embedder", {**env, "EMBEDDER_PORT": "0"},
                                  work / "embedder.log")
    server = MilvusServer(work / "milvus") if args.milvus == "server" else None
    try:
        model = asyncio.run(model_of(embedder_at))
        uris = databases(work, server)
        # Milvus Lite holds a file until its process exits, and only reopening seals and
        # indexes what was inserted: both copies (the service's, and this process' mirror for
        # the 'parts' timing) are written by child processes, then opened fresh.
        for uri in uris:
            child = multiprocessing.get_context("spawn").Process(
                target=_load, args=(uri, model, args.big))
            child.start()
            child.join()
        mirror_store = open_store(uris[1])
        search, search_at = start("imagesearch-search", {
            **env, "SEARCH_PORT": "0", "SEARCH_EMBEDDER_TARGET": embedder_at,
            "SEARCH_MILVUS_URI": uris[0]}, work / "search.log")
        try:
            print(f"Milvus: {args.milvus}", flush=True)
            asyncio.run(run(args, mirror_store, model, embedder_at, search_at))
        finally:
            search.send_signal(signal.SIGTERM)
            search.wait(30)
            mirror_store.close()
    finally:
        embedder.send_signal(signal.SIGTERM)
        embedder.wait(30)
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def databases(work: Path, server: MilvusServer | None) -> list[str]:
    """The service's and the mirror's: two Lite files, or two databases on a new server."""
    if server is None:
        return [str(work / "search.db"), str(work / "mirror.db")]
    server.start()
    client = MilvusClient(server.uri)
    for name in ("service", "mirror"):
        client.create_database(name)
    client.close()
    return [f"{server.uri}/service", f"{server.uri}/mirror"]


if __name__ == "__main__":
    main()
