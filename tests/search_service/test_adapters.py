"""The adapters' own promises: index parameters per index type, ef >= top_k on a real HNSW
index, and the embedder's limits respected whatever the search API allows."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from embedder_service.server import EmbedderServer
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.adapters.milvus.config import IndexConfig
from search_service.adapters.milvus.schema import vectors_collection
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
from search_service.server import SearchServer
from tests.conftest import embedder_settings
from tests.search_fixtures import scene_images, search_settings


@pytest.mark.parametrize(("index_type", "uri", "build", "search"), [
    (None, "data/x.db", {}, {"ef": 128}),  # Lite's AUTOINDEX is HNSW (faiss)
    (None, "http://milvus:19530", {"M": 16, "efConstruction": 200}, {"ef": 128}),
    ("HNSW", "data/x.db", {"M": 16, "efConstruction": 200}, {"ef": 128}),
    ("IVF_FLAT", "http://milvus:19530", {}, {}),
    ("DISKANN", "http://milvus:19530", {}, {}),
])
def test_each_index_type_gets_only_its_own_parameters(index_type, uri, build, search):
    index = IndexConfig.of(index_type, uri)
    assert (index.build_params, index.search_params) == (build, search)


def test_hnsw_ef_is_never_below_top_k():
    index = IndexConfig.of("HNSW", "http://milvus:19530", search_ef=64)
    assert index.search_params_for(10) == {"ef": 64}
    assert index.search_params_for(1000) == {"ef": 1000}
    assert IndexConfig.of("IVF_FLAT", "http://m:1").search_params_for(1000) == {}


def test_a_top_k_above_ef_returns_top_k_hits_on_hnsw(milvus_backend):
    """Milvus refuses (or cuts to ef) an HNSW search whose ef is below its limit."""
    model = ModelSpace("sha256:" + "9e" * 32, 8, "m")
    store = open_store(milvus_backend.new_uri(), index=IndexConfig.of(
        "HNSW", "http://x", search_ef=16))
    try:
        record = store.create_collection("wide", model)
        vectors = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert(record, [f"v{i}" for i in range(300)], vectors, [{}] * 300)
        # Sealed and indexed: growing segments are searched by brute force, whatever ef.
        name = vectors_collection(model)
        store._client.flush(name)
        deadline = time.monotonic() + 120
        while (store._client.describe_index(name, "vector").get("pending_index_rows", 0)
               and time.monotonic() < deadline):
            time.sleep(0.5)
        (hits,) = store.search(record, vectors[:1], 200)
        assert len(hits) == 200
    finally:
        store.close()


async def test_batches_are_split_to_the_embedders_own_limit(milvus_backend, tmp_path):
    """An embedder allowing fewer items per request than AddImages (256) still serves it."""
    embedder = EmbedderServer(embedder_settings(max_items_per_request=4))
    await embedder.start()
    server = SearchServer(search_settings(milvus_backend.new_uri(), embedder.port))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="split"))
            items = scene_images(11, seed=61)
            response = await stub.AddImages(pb.AddImagesRequest(collection="split", images=[
                pb.NewImage(id=i, data=d) for i, d, _ in items]))
            assert [r.code for r in response.results] == [0] * 11
            found = await stub.Search(pb.SearchRequest(collection="split", top_k=11, queries=[
                pb.Query(text=f"shape {n}") for n in range(6)]))
            assert [len(r.hits) for r in found.results] == [11] * 6
    finally:
        await server.stop(grace=0)
        await embedder.stop(grace=0)


def noise_png(seed: int, side: int = 320) -> bytes:
    from PIL import Image

    from tests.conftest import encode
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels))


async def test_large_photos_are_split_to_the_embedders_message_limit(milvus_backend):
    """Found from outside: 64 photos of 2 MB in one ingest batch made one 128 MB embedder
    request, and the whole stream failed RESOURCE_EXHAUSTED."""
    photos = [noise_png(seed) for seed in range(12)]  # ~300 KB each
    limit = 1 << 20
    embedder = EmbedderServer(embedder_settings(max_message_bytes=limit))
    await embedder.start()
    server = SearchServer(search_settings(milvus_backend.new_uri(), embedder.port))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="photos"))
            requests = [pb.IngestImagesRequest(collection="photos", image=pb.NewImage(
                id=f"p{n}", data=data)) for n, data in enumerate(photos)]
            huge = pb.IngestImagesRequest(collection="photos", image=pb.NewImage(
                id="huge", data=noise_png(99, side=700)))  # alone above the embedder's limit
            acks = [ack async for ack in stub.IngestImages(iter([*requests, huge]))]
            assert [(a.id, a.status.code) for a in acks[:-1]] == [(f"p{n}", 0)
                                                                  for n in range(12)]
            assert acks[-1].status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert "the embedder accepts at most 1048576 bytes" in acks[-1].status.message
    finally:
        await server.stop(grace=0)
        await embedder.stop(grace=0)
