"""Wires the search service together and owns its start and stop.

The port opens with health NOT_SERVING (and 'liveness' SERVING). Milvus is opened (Milvus
Lite: the file; a server: a connection) and the registry made ready; a server that cannot be
reached yet is retried in the background, calls meanwhile failing UNAVAILABLE, so a pod
started before Milvus waits for it instead of crash-looping. A watcher checks the embedder
and Milvus every few seconds and reports SERVING only while both answer, so Kubernetes stops
routing to a pod whose dependencies are gone. On SIGTERM: NOT_SERVING, drain, close the
embedder channel and the Milvus client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from pymilvus.exceptions import MilvusException

from imagesearch.errors import Unavailable
from imagesearch.search.v1 import search_pb2
from imagesearch.serving import grpc_server
from imagesearch.serving.handlers import generic_handler
from imagesearch.serving.interceptors import (
    ServerMetrics,
)
from imagesearch.serving.logs import configure_logging
from search_service.core import SearchCore, unreachable
from search_service.embedder_client import (
    ChannelOptions,
    ClientTls,
    EmbedderClient,
    create_channel,
)
from search_service.servicer import CoreHolder, SearchServicer
from search_service.settings import SearchSettings
from search_service.store import IndexConfig, MilvusStore, is_lite

log = logging.getLogger(__name__)
SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"]


def index_config(settings: SearchSettings) -> IndexConfig:
    default = IndexConfig.for_uri(settings.milvus_uri)
    if settings.index_type is None and is_lite(settings.milvus_uri):
        return default
    return IndexConfig(
        index_type=settings.index_type or default.index_type,
        build_params={"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction},
        search_params={"ef": settings.search_ef})


def open_store(settings: SearchSettings) -> MilvusStore:
    """Connects to Milvus and prepares the registry (blocking)."""
    uri = settings.milvus_uri
    if is_lite(uri):
        Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return MilvusStore.connect(uri, settings.milvus_credentials(), index_config(settings),
                               settings.milvus_consistency, settings.milvus_timeout_s)


class SearchServer:
    def __init__(self, settings: SearchSettings,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._channel: grpc.aio.Channel | None = None
        self._store: MilvusStore | None = None
        self._holder = CoreHolder()
        self._embedder: EmbedderClient | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._metrics_server: Any = None

    async def start(self) -> int:
        s = self.settings
        tls = s.tls_files()
        interceptors = s.interceptors(ServerMetrics(self.registry))
        self._server, self.port = grpc_server.create_server(s.server_options(s.port), interceptors)
        self._channel = create_channel(s.embedder_target, ChannelOptions(
            s.max_message_bytes, s.embedder_keepalive_s, s.embedder_keepalive_timeout_s,
            self._client_tls()))
        self._embedder = EmbedderClient(self._channel, s.embedder_timeout_s,
                                        s.embedder_credentials())
        handler = generic_handler(SERVICE, SearchServicer(self._holder))
        self._server.add_generic_rpc_handlers([handler])
        self._health = grpc_server.add_health_and_reflection(self._server, [SERVICE.full_name])
        await grpc_server.set_serving(self._health, [SERVICE.full_name], serving=False)
        await grpc_server.report_alive(self._health)
        await self._server.start()
        log.info("listening", extra={"address": f"{s.host}:{self.port}", "tls": tls is not None,
                                     "milvus": "lite" if is_lite(s.milvus_uri) else "server"})
        if s.metrics_port is not None:
            self._metrics_server, _ = start_http_server(s.metrics_port, s.metrics_host,
                                                        registry=self.registry)
        try:
            # A misconfiguration (bad URI, refused version, wrong credentials) fails start-up.
            await self._connect_milvus()
        except BaseException:
            await self.stop(grace=0)
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return self.port

    async def _connect_milvus(self) -> bool:
        """Opens Milvus and makes the core; False while Milvus cannot be reached."""
        s = self.settings
        try:
            store = await asyncio.get_running_loop().run_in_executor(None, open_store, s)
        except MilvusException as err:
            if not unreachable(err):
                raise
            log.warning("milvus unreachable; retrying", extra={"reason": str(err)})
            return False
        assert self._embedder is not None
        self._store = store
        self._holder.core = SearchCore(store, self._embedder, s.store_threads)
        log.info("milvus connected")
        return True

    def _client_tls(self) -> ClientTls | None:
        s = self.settings
        if s.embedder_tls_ca_file is None and s.embedder_tls_cert_file is None:
            return None
        return ClientTls(s.embedder_tls_ca_file, s.embedder_tls_cert_file, s.embedder_tls_key_file)

    async def _watch(self) -> None:
        serving: bool | None = None
        while True:
            healthy = await self._dependencies_ok()
            if healthy != serving:
                await grpc_server.set_serving(self._health, [SERVICE.full_name], healthy)
                log.info("health", extra={"serving": healthy})
                serving = healthy
            await asyncio.sleep(self.settings.health_check_interval_s)

    async def _sweep(self) -> None:
        """Removes what late writes left of deleted collections (MilvusStore.sweep)."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            if self._store is None:
                continue
            try:
                swept = await asyncio.get_running_loop().run_in_executor(None, self._store.sweep)
            except Exception:  # Milvus down: the next round tries again
                log.warning("sweep failed", exc_info=True)
                continue
            if swept:
                log.info("swept deleted collections", extra={"collections": swept})

    async def _dependencies_ok(self) -> bool:
        try:
            if self._holder.core is None and not await self._connect_milvus():
                return False
            assert self._embedder is not None
            assert self._store is not None
            await self._embedder.model(remaining=5.0)
            await asyncio.get_running_loop().run_in_executor(None, self._store.check)
        except Unavailable as err:
            log.warning("dependency unavailable", extra={"reason": str(err)})
            return False
        except Exception:  # Milvus raises many types when unreachable
            log.warning("milvus check failed", exc_info=True)
            return False
        return True

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_s if grace is None else grace
        for task in (self._watcher, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self._holder.core is not None:
            await self._holder.core.close()
        if self._channel is not None:
            await self._channel.close()
        if self._store is not None:
            self._store.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


async def serve(settings: SearchSettings) -> None:
    server = SearchServer(settings)
    await server.start()
    await grpc_server.wait_for_termination_signal()
    log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
    await server.stop()


def main() -> None:
    settings = SearchSettings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except grpc_server.PortUnavailable as err:
        log.error("cannot start: %s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
