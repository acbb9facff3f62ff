"""Both services in this process on free loopback ports, for the bench evaluations that call
the search API: the embedder (CPU) and the search service over a Milvus Lite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from imagesearch.search.v1 import search_pb2_grpc
from search_service.server import SearchServer
from search_service.settings import SearchSettings


@asynccontextmanager
async def search_stack(database: Path, bundle: Path = BUNDLED_MODEL, **search: object
                       ) -> AsyncIterator[search_pb2_grpc.SearchServiceStub]:
    """A stub of a search service over `database`, stopped (with its embedder) on exit;
    `search` overrides SearchSettings fields."""
    embedder = EmbedderServer(EmbedderSettings(bundle=bundle, port=0, log_level="WARNING",
                                               providers=["CPUExecutionProvider"]))
    await embedder.start()
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
