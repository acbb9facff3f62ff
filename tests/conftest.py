"""Shared fixtures: real photos, encoded test images, an in-process embedder on a free port."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from PIL import Image
from skimage import data as skdata

from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from imagesearch.embedder.v1 import embedder_pb2_grpc
from search_service.server import SearchServer

# The search service's fixtures (a real search server on Milvus Lite), for every test package.
pytest_plugins = ["tests.search_fixtures"]

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field")


@pytest_asyncio.fixture(autouse=True)
async def no_server_outlives_its_test(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Stops every service a test started and did not stop, and fails a test that passed.

    A test that fails half-way leaves its server running, and a gRPC aio server collected
    after the event loop has closed hangs the interpreter's exit: a CI run whose tests had
    all finished sat there until its time was up. Servers started by module- or session-scoped
    fixtures start before this fixture and are theirs to stop.
    """
    running: list[EmbedderServer | SearchServer] = []
    for cls in (EmbedderServer, SearchServer):
        monkeypatch.setattr(cls, "start", _tracked_start(cls.start, running))
        monkeypatch.setattr(cls, "stop", _tracked_stop(cls.stop, running))
    yield
    leaked = list(running)
    for server in leaked:
        await server.stop(grace=0)
    assert not leaked, f"the test left {len(leaked)} server(s) running: stop them in a finally"


def _tracked_start(start: Callable[..., Any], running: list[Any]) -> Callable[..., Any]:
    async def tracked(self: Any) -> int:
        running.append(self)
        return int(await start(self))
    return tracked


def _tracked_stop(stop: Callable[..., Any], running: list[Any]) -> Callable[..., Any]:
    async def tracked(self: Any, grace: float | None = None) -> None:
        if self in running:
            running.remove(self)
        await stop(self, grace)
    return tracked


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real photographs shipped with scikit-image."""
    return {name: Image.fromarray(getattr(skdata, name)()) for name in PHOTO_NAMES}


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def encode_image() -> Callable[..., bytes]:
    return encode


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    return BUNDLED_MODEL


def embedder_settings(**overrides: Any) -> EmbedderSettings:
    base: dict[str, Any] = {"port": 0, "host": "127.0.0.1", "log_format": "text",
                            "max_queue_delay_ms": 2.0, "shutdown_grace_s": 5.0}
    return EmbedderSettings(**{**base, **overrides})


@pytest_asyncio.fixture(scope="session")
async def embedder_server() -> AsyncIterator[EmbedderServer]:
    server = EmbedderServer(embedder_settings())
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest_asyncio.fixture(scope="session")
async def embedder_stub(
    embedder_server: EmbedderServer,
) -> AsyncIterator[embedder_pb2_grpc.EmbedderServiceStub]:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{embedder_server.port}",
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)])
    yield embedder_pb2_grpc.EmbedderServiceStub(channel)
    await channel.close()
