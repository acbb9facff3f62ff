"""Building, securing and running a grpc.aio server: shared by both services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from imagesearch.keepalive import ping_options

log = logging.getLogger(__name__)

# A health entry that is SERVING from the moment the port opens until shutdown, whatever the
# dependencies: the liveness probe's target. "" and each service name mean ready to serve
# (model loaded, Milvus and the embedder reachable) and drive startup and readiness probes; a
# liveness probe on them would restart pods whenever a dependency is down.
LIVENESS = "liveness"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class PortUnavailable(RuntimeError):
    """The address cannot be listened on (in use, or not this machine's): start-up fails."""


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    # When set, clients must present a certificate signed by this CA (mutual TLS).
    client_ca_file: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca_file.read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=ca, require_client_auth=ca is not None)


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 keepalive, both ways.

    The server pings each connection every `time_s` and closes it when a ping goes unanswered
    for `timeout_s`: a client that vanished without closing (node lost, network cut) has its
    calls cancelled instead of holding them until TCP gives up, many minutes later.

    Clients may ping as often as every `min_client_interval_s`, calls in flight or not, so that
    they too find dead connections (and keep idle ones open through NATs and load balancers).
    gRPC's own default allows one ping per 5 minutes, and only during calls: a client with the
    usual 10-30 s keepalive gets GOAWAY "too_many_pings" and loses its connection.
    """

    time_s: float = 60.0
    timeout_s: float = 20.0
    min_client_interval_s: float = 5.0

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            *ping_options(self.time_s, self.timeout_s),
            # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS; the string has no "recv".
            ("grpc.http2.min_ping_interval_without_data_ms",
             int(self.min_client_interval_s * 1000)),
        ]


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    max_message_bytes: int
    tls: TlsFiles | None = None
    # Clients reconnect after this age, so new replicas behind a headless Service get traffic;
    # calls on the old connection get the grace to finish.
    max_connection_age_s: float | None = None
    max_connection_age_grace_s: float = 30.0
    keepalive: Keepalive = Keepalive()


def create_server(
    options: ServerOptions, interceptors: Sequence[grpc.aio.ServerInterceptor],
) -> tuple[grpc.aio.Server, int]:
    """Creates the server and binds its port (0 picks a free one); returns both."""
    channel_options = [
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.max_send_message_length", options.max_message_bytes),
        *options.keepalive.channel_options(),
        # gRPC sets SO_REUSEPORT by default, so a second server on a port in use starts
        # without complaint and the kernel splits connections between the two.
        ("grpc.so_reuseport", 0),
    ]
    if options.max_connection_age_s:
        age_ms = int(options.max_connection_age_s * 1000)
        grace_ms = int(options.max_connection_age_grace_s * 1000)
        channel_options += [("grpc.max_connection_age_ms", age_ms),
                            ("grpc.max_connection_age_grace_ms", grace_ms)]
    server = grpc.aio.server(interceptors=list(interceptors), options=channel_options)
    address = f"{options.host}:{options.port}"
    try:
        if options.tls is not None:
            port = server.add_secure_port(address, options.tls.server_credentials())
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as err:  # grpcio's "Failed to bind to address ..."
        raise PortUnavailable(f"cannot listen on {address}: the port is in use or the "
                              "address is not this machine's; choose another port") from err
    return server, port


def add_health_and_reflection(server: grpc.aio.Server,
                              service_names: Sequence[str]) -> health.aio.HealthServicer:
    """Standard grpc.health.v1, starting NOT_SERVING, plus server reflection."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_reflection(server, [*service_names,
                            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    return health_servicer


def add_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Server reflection as grpc.reflection.v1 and v1alpha. grpcio-reflection serves v1alpha
    only, and grpcurl asks for v1 first; v1 is v1alpha renamed, message for message and field
    for field (grpc-proto's reflection/v1/reflection.proto), so one servicer answers both."""
    servicer = reflection.aio.ReflectionServicer(
        [*service_names, reflection.SERVICE_NAME, REFLECTION_V1])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}),))


async def report_alive(health_servicer: health.aio.HealthServicer, alive: bool = True) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if alive
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set(LIVENESS, status)


async def set_serving(health_servicer: health.aio.HealthServicer,
                      service_names: Sequence[str], serving: bool, overall: bool = True) -> None:
    """Sets the status of `service_names` and, when `overall`, of the server ("")."""
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for name in ("", *service_names) if overall else service_names:
        await health_servicer.set(name, status)


async def wait_for_termination_signal() -> None:
    """Returns on SIGTERM or SIGINT (Kubernetes sends SIGTERM before killing a pod)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
