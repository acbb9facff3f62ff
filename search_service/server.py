"""Wires the search service together and owns its start and stop: the one module that knows
every layer (domain and core, the Milvus and embedder adapters, the gRPC transport).

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
import os
import shutil
import socket
import ssl
import tempfile
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry
from pymilvus.exceptions import MilvusException

from imagesearch.channels import ClientTls
from imagesearch.errors import Unavailable
from imagesearch.search.v1 import search_pb2
from imagesearch.serving import host
from search_service.adapters.embedder_grpc import GrpcEmbedder, embedder_channel
from search_service.adapters.image_folder import FolderImageStore
from search_service.adapters.image_s3 import S3ImageStore
from search_service.adapters.milvus.config import IndexConfig, is_lite
from search_service.adapters.milvus.store import MilvusStore
from search_service.adapters.milvus.vector_store import MilvusVectorStore, open_store, unreachable
from search_service.application import SearchApp
from search_service.core import PixelPolicy, SearchCore
from search_service.migration import Migrations, MigrationWorker
from search_service.ports import ImageStore
from search_service.settings import SearchSettings
from search_service.transports.grpc_servicer import AppHolder, SearchServicer
from search_service.transports.http_gateway import HttpGateway

log = logging.getLogger(__name__)
SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"]


def index_config(settings: SearchSettings) -> IndexConfig:
    return IndexConfig.of(settings.index_type, settings.milvus_uri, settings.hnsw_m,
                          settings.hnsw_ef_construction, settings.search_ef)


def connect_store(settings: SearchSettings) -> MilvusStore:
    """Connects to Milvus and prepares the registry (blocking)."""
    uri = settings.milvus_uri
    if is_lite(uri):
        Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return open_store(uri, settings.milvus_credentials(), index_config(settings),
                      settings.milvus_consistency, settings.milvus_timeout_s,
                      settings.milvus_tls_ca_file)


def http_tls(settings: SearchSettings) -> ssl.SSLContext | None:
    """HTTPS for the HTTP/JSON port with the gRPC port's certificate, and its client CA: the
    same policy on both faces (mutual TLS on one is mutual TLS on the other)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(settings.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def open_image_store(location: Path | str | None, endpoint: str | None = None,
                     credentials_file: Path | None = None) -> ImageStore | None:
    """The image store at a folder or an s3:// URI (SearchSettings.image_location)."""
    if isinstance(location, str):
        return S3ImageStore(location, endpoint, credentials_file=credentials_file)
    return FolderImageStore(location) if location is not None else None


class SearchServer:
    def __init__(self, settings: SearchSettings,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self._holder = AppHolder()
        self._host = host.ServiceHost(
            settings, SERVICE, SearchServicer(self._holder, settings.max_message_bytes),
            self.registry)
        self._channel: grpc.aio.Channel | None = None
        self._embedder: GrpcEmbedder | None = None
        self._store: MilvusVectorStore | None = None
        self._images: ImageStore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._gateway: HttpGateway | None = None
        self._socket_dir: str | None = None
        self._connected = asyncio.Event()

    @property
    def port(self) -> int:
        return self._host.port

    @property
    def http_port(self) -> int | None:
        """The HTTP/JSON port (the one picked when http_port is 0); None: off."""
        return self._gateway.port if self._gateway is not None else None

    async def start(self) -> int:
        s = self.settings
        self._channel = embedder_channel(s.embedder_target, s.max_message_bytes,
                                         s.embedder_keepalive_s, s.embedder_keepalive_timeout_s,
                                         self._client_tls())
        self._embedder = GrpcEmbedder(self._channel, s.embedder_timeout_s,
                                      s.embedder_credentials(), s.max_message_bytes)
        if s.http_port is not None:
            # The gateway's calls take a Unix socket in a folder only this user can open: no
            # TLS to terminate twice, and no port another host could reach.
            self._socket_dir = tempfile.mkdtemp(prefix="imagesearch-")
        local_socket = f"{self._socket_dir}/grpc.sock" if self._socket_dir else None
        await self._host.start(s.port, local_socket,
                               milvus="lite" if is_lite(s.milvus_uri) else "server")
        try:
            if s.http_port is not None:
                assert local_socket is not None
                self._gateway = HttpGateway(SERVICE, f"unix:{local_socket}", s.host,
                                            s.http_port, s.max_message_bytes, http_tls(s))
                await self._gateway.start()
                log.info("http/json listening", extra={"address": f"{s.host}:{self.http_port}",
                                                       "tls": s.tls_cert_file is not None})
            # A misconfiguration (bad URI, refused version, wrong credentials) fails start-up.
            await self._connect_milvus()
        except BaseException:
            await self.stop(grace=0)
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch()), loop.create_task(self._sweep()),
                       loop.create_task(self._migrate())]
        return self.port

    async def _connect_milvus(self) -> bool:
        """Opens Milvus and makes the application; False while Milvus cannot be reached."""
        s = self.settings
        try:
            store = await asyncio.get_running_loop().run_in_executor(None, connect_store, s)
        except MilvusException as err:
            if not unreachable(err):
                raise
            log.warning("milvus unreachable; retrying", extra={"reason": str(err)})
            return False
        assert self._embedder is not None
        self._store = MilvusVectorStore(store, s.store_threads)
        location = s.image_location()
        self._images = open_image_store(location, s.image_store_endpoint,
                                        s.image_store_credentials_file)
        core = SearchCore(self._store, self._embedder, images=self._images,
                          pixels=PixelPolicy(s.keep_pixels, s.pixels_side))
        self._holder.app = SearchApp(core, Migrations(
            core, f"{socket.gethostname()}:{os.getpid()}", s.migration_lease_s,
            s.migration_settle_s))
        self._connected.set()
        log.info("milvus connected", extra={"image_store": str(location or "off")})
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
                await self._host.set_serving(healthy)
                log.info("health", extra={"serving": healthy})
                serving = healthy
            await asyncio.sleep(self.settings.health_check_interval_s)

    async def _migrate(self) -> None:
        """Moves migrations on in the background (search_service.migration), once Milvus has
        been reached."""
        await self._connected.wait()
        assert self._holder.app is not None
        await MigrationWorker(self._holder.app.migrations, self.settings.migration_poll_s).run()

    async def _sweep(self) -> None:
        """Removes what late writes left of deleted collections (SearchCore.sweep)."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            if self._holder.app is None:
                continue
            try:
                swept = await self._holder.app.core.sweep()
            except Exception:  # Milvus or the image store down: the next round tries again
                log.warning("sweep failed", exc_info=True)
                continue
            if swept:
                log.info("swept deleted collections", extra={"collections": len(swept)})

    async def _dependencies_ok(self) -> bool:
        try:
            if self._holder.app is None and not await self._connect_milvus():
                return False
            assert self._embedder is not None
            assert self._store is not None
            await self._embedder.model(remaining=5.0)
            await self._store.check()
            if self._images is not None:
                await self._images.check()
        except Unavailable as err:
            log.warning("dependency unavailable", extra={"reason": str(err)})
            return False
        except Exception:  # Milvus raises many types when unreachable
            log.warning("milvus check failed", exc_info=True)
            return False
        return True

    async def stop(self, grace: float | None = None) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Together: health turns NOT_SERVING at once and in-flight gRPC calls get the grace;
        # HTTP requests in flight are gRPC calls too, so the HTTP drain ends with it.
        grace_s = self.settings.shutdown_grace_s if grace is None else grace
        await asyncio.gather(self._host.stop(grace_s),
                             *([self._gateway.stop()] if self._gateway is not None else []))
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self._holder.app is not None:
            await self._holder.app.close()
        if self._channel is not None:
            await self._channel.close()


def main() -> None:
    settings = SearchSettings()
    host.run(settings, lambda: SearchServer(settings))


if __name__ == "__main__":
    main()
