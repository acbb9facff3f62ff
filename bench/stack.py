"""Both services in this process on free loopback ports, for the bench evaluations that call
the search API: the embedder (CPU) and the search service over a Milvus Lite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from imagesearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from imagesearch.search.v1 import search_pb2_grpc
from search_service.server import SearchServer
from search_service.settings import SearchSettings


@asynccontextmanager
async def search_stack(database: Path, bundle: Path = BUNDLED_MODEL,
                       extra_bundles: Sequence[Path] = (), **search: object
                       ) -> AsyncIterator[search_pb2_grpc.SearchServiceStub]:
    """A stub of a search service over `database`, stopped (with its embedder) on exit;
    `search` overrides SearchSettings fields. The embedder serves `extra_bundles` too, each
    ready before this returns."""
    embedder = EmbedderServer(EmbedderSettings(bundle=bundle, port=0, log_level="WARNING",
                                               providers=["CPUExecutionProvider"],
                                               extra_bundles=list(extra_bundles)))
    await embedder.start()
    await _ready(embedder.port, 1 + len(extra_bundles))
    server = SearchServer(SearchSettings(**{  # type: ignore[arg-type]
        "milvus_uri": str(database), "embedder_target": f"127.0.0.1:{embedder.port}",
        "port": 0, "log_level": "WARNING", "embedder_timeout_s": 120.0, **search}))
    try:
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield search_pb2_grpc.SearchServiceStub(channel)
    finally:
        await server.stop(grace=1)
        await embedder.stop(grace=1)


async def _ready(port: int, models: int) -> None:
    """Returns once the embedder has loaded `models` models (extra ones load after start)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        for _ in range(600):
            info = await stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())
            if sum(m.ready for m in info.models) >= models or (models == 1 and not info.models):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("the embedder's models did not load within a minute")
