"""Search-service fixtures (a pytest plugin, see tests/conftest.py): a real search server on
Milvus Lite, next to the real embedder."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio

from embedder_service.server import EmbedderServer
from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.server import SearchServer
from search_service.settings import SearchSettings
from tests.conftest import encode


def search_settings(db: Path, embedder_port: int, **overrides: object) -> SearchSettings:
    base: dict[str, object] = {
        "milvus_uri": str(db), "embedder_target": f"127.0.0.1:{embedder_port}", "port": 0,
        "log_format": "text", "health_check_interval_s": 0.2, "embedder_timeout_s": 5.0}
    return SearchSettings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module")
async def search(embedder_server: EmbedderServer, tmp_path_factory
                 ) -> AsyncIterator[tuple[SearchServer, search_pb2_grpc.SearchServiceStub]]:
    db = tmp_path_factory.mktemp("milvus") / "search.db"
    server = SearchServer(search_settings(db, embedder_server.port))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, search_pb2_grpc.SearchServiceStub(channel)
    await channel.close()
    await server.stop(grace=1)


def scene_images(count: int, seed: int) -> list[tuple[str, bytes, synthetic.Scene]]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        scene = synthetic.random_scene(rng)
        out.append((f"img-{index:03d}", encode(synthetic.render(scene, 96, rng)), scene))
    return out


def labels(scene: synthetic.Scene) -> dict[str, pb.MetadataValue]:
    return {"colour": pb.MetadataValue(string_value=scene.colour),
            "shape": pb.MetadataValue(string_value=scene.shape),
            "count": pb.MetadataValue(int_value=scene.count)}


async def add(stub, collection: str, items) -> pb.AddImagesResponse:
    return await stub.AddImages(pb.AddImagesRequest(collection=collection, images=[
        pb.NewImage(id=i, data=d, metadata=labels(s)) for i, d, s in items]))


