"""One gRPC service of ours, from open port to graceful stop: what both servers share.

The port opens first with health NOT_SERVING for "" and the service (the readiness and
startup probes' target) and SERVING for "liveness" (the process runs), so probes and clients
get a clear answer while a model loads or a dependency is awaited; the service turns SERVING
when it is ready. Also: server reflection, the interceptor chain from the settings, and the
Prometheus /metrics endpoint. On stop: NOT_SERVING, in-flight calls get `grace` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import CollectorRegistry, start_http_server

from imagesearch.serving import grpc_server
from imagesearch.serving.handlers import generic_handler
from imagesearch.serving.interceptors import ServerMetrics
from imagesearch.serving.logs import configure_logging
from imagesearch.serving.settings import ServingSettings

log = logging.getLogger(__name__)


class ServiceHost:
    def __init__(self, settings: ServingSettings, service: ServiceDescriptor, servicer: object,
                 registry: CollectorRegistry) -> None:
        self._settings = settings
        self._service = service
        self._servicer = servicer
        self._registry = registry
        self._server: grpc.aio.Server | None = None
        self._health: Any = None  # grpc_health's aio HealthServicer (untyped)
        self._metrics_server: Any = None
        self.port = 0

    async def start(self, port: int, local_socket: str | None = None,
                    **log_fields: object) -> int:
        """Listens on `port` (0: a free one), NOT_SERVING until set_serving(True); also on the
        Unix socket `local_socket`, without TLS, for callers in this process."""
        s = self._settings
        interceptors = s.interceptors(ServerMetrics(self._registry))
        self._server, self.port = grpc_server.create_server(s.server_options(port), interceptors)
        if local_socket is not None:
            self._server.add_insecure_port(f"unix:{local_socket}")
        self._server.add_generic_rpc_handlers([generic_handler(self._service, self._servicer)])
        self._health = grpc_server.add_health_and_reflection(self._server,
                                                             [self._service.full_name])
        await self.set_serving(False)
        await self.report_alive(True)
        await self._server.start()
        log.info("listening", extra={"address": f"{s.host}:{self.port}",
                                     "tls": s.tls_files() is not None, **log_fields})
        if s.metrics_port is not None:
            self._metrics_server, _ = start_http_server(s.metrics_port, s.metrics_host,
                                                        registry=self._registry)
        return self.port

    @property
    def metrics_port(self) -> int | None:
        """The /metrics endpoint's port (the one picked when metrics_port is 0); None: off."""
        return None if self._metrics_server is None else int(self._metrics_server.server_port)

    async def set_serving(self, serving: bool) -> None:
        await grpc_server.set_serving(self._health, [self._service.full_name], serving)

    async def set_health(self, name: str, serving: bool) -> None:
        """One more health name beside the service's (e.g. a part that becomes ready later)."""
        await grpc_server.set_serving(self._health, [name], serving, overall=False)

    async def report_alive(self, alive: bool) -> None:
        await grpc_server.report_alive(self._health, alive)

    async def stop(self, grace: float) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None


class Startable(Protocol):
    """What `run` runs: a server with start() and stop()."""

    async def start(self) -> int: ...

    async def stop(self, grace: float | None = None) -> None: ...


async def serve(server: Startable, grace_s: float) -> None:
    """Starts `server`, then stops it gracefully on SIGTERM or SIGINT."""
    await server.start()
    await grpc_server.wait_for_termination_signal()
    log.info("shutting down", extra={"grace_s": grace_s})
    await server.stop()


def run(settings: ServingSettings, make: Callable[[], Startable],
        startup_errors: tuple[type[BaseException], ...] = ()) -> None:
    """A service's main(): logging from its settings, then `serve`; a start-up failure we
    can explain (a bad bundle, a port in use) exits 2 with its message, not a traceback."""
    configure_logging(settings.log_level, settings.log_format)
    explained: tuple[type[BaseException], ...] = (grpc_server.PortUnavailable, *startup_errors)
    try:
        asyncio.run(serve(make(), settings.shutdown_grace_s))
    except explained as err:
        log.error("cannot start: %s", err)
        sys.exit(2)

