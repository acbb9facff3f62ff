"""Search-service fixtures (a pytest plugin, see tests/conftest.py): a real search server next
to the real embedder, on Milvus Lite and on a real Milvus server."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from pymilvus import MilvusClient

from embedder_service.server import EmbedderServer
from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.server import SearchServer
from search_service.settings import SearchSettings
from tests.conftest import encode
from tests.milvus_server import MilvusServer, loopback_only

BACKENDS = ("lite", "server")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """One Milvus standalone server for the session; each user gets a database of its own."""
    if not loopback_only():
        reason = ("the Milvus server tests run only where the network has nothing but loopback: "
                  "run them with `make test` (scripts/loopback-only.sh)")
        if os.environ.get("IMAGESEARCH_REQUIRE_MILVUS_SERVER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    server.start()
    yield server
    server.stop()


class MilvusBackend:
    """Hands out empty Milvus namespaces of one kind: a new Lite file, or a new database on
    the shared server."""

    _databases = itertools.count()

    def __init__(self, kind: str, tmp: pytest.TempPathFactory,
                 server: MilvusServer | None) -> None:
        self.kind = kind
        self.server = server
        self._tmp = tmp

    def new_uri(self) -> str:
        if self.server is None:
            return str(self._tmp.mktemp("milvus") / "search.db")
        database = f"test_{os.getpid()}_{next(self._databases)}"
        client = MilvusClient(self.server.uri)
        client.create_database(database)
        client.close()
        return f"{self.server.uri}/{database}"


@pytest.fixture(scope="module", params=BACKENDS)
def milvus_backend(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> MilvusBackend:
    server = request.getfixturevalue("milvus_server") if request.param == "server" else None
    return MilvusBackend(request.param, tmp_path_factory, server)


def search_settings(uri: Path | str, embedder_port: int, **overrides: object) -> SearchSettings:
    base: dict[str, object] = {
        "milvus_uri": str(uri), "embedder_target": f"127.0.0.1:{embedder_port}", "port": 0,
        "log_format": "text", "health_check_interval_s": 0.2, "embedder_timeout_s": 5.0}
    return SearchSettings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module")
async def search(embedder_server: EmbedderServer, milvus_backend: MilvusBackend
                 ) -> AsyncIterator[tuple[SearchServer, search_pb2_grpc.SearchServiceStub]]:
    server = SearchServer(search_settings(milvus_backend.new_uri(), embedder_server.port))
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


