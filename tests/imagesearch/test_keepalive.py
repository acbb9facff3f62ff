"""HTTP/2 keepalive on our servers: clients may ping idle connections, and a client that stops
answering pings has its calls cancelled. Intervals are scaled down from the defaults (60 s,
20 s, 5 s) to keep the tests short; gRPC's client pings at most once a second."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedder_service.settings import EmbedderSettings
from imagesearch.keepalive import client_options
from imagesearch.serving import grpc_server
from imagesearch.serving.grpc_server import Keepalive

# What gRPC does when nothing is set: one client ping per 5 minutes, server pings every 2 h.
GRPC_DEFAULTS = Keepalive(time_s=7200, timeout_s=20, min_client_interval_s=300)

# A client started in its own process, so that it can be frozen (SIGSTOP): its kernel keeps the
# TCP connection open, but nothing answers the server's pings any more.
HOLDING_CLIENT = """
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
channel.unary_unary("/test.Hold/Hold")(b"", timeout=600)
"""


class Hold:
    """A call that never ends by itself: records its start and its cancellation."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def hold(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ended.set()
        return b""  # pragma: no cover - only cancellation ends the wait


async def start_server(keepalive: Keepalive, hold: Hold | None = None
                       ) -> tuple[grpc.aio.Server, int]:
    server, port = grpc_server.create_server(
        grpc_server.ServerOptions("127.0.0.1", 0, 1 << 20, keepalive=keepalive), [])
    health = grpc_server.add_health_and_reflection(server, [])
    await grpc_server.report_alive(health)
    if hold is not None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "test.Hold", {"Hold": grpc.unary_unary_rpc_method_handler(hold.hold)})])
    await server.start()
    return server, port


async def states_while_idle(channel: grpc.aio.Channel, seconds: float) -> list[str]:
    """The channel's connectivity states over `seconds` with no call in flight."""
    states: list[str] = []

    async def watch() -> None:
        state = channel.get_state()
        while True:
            states.append(state.name)
            await channel.wait_for_state_change(state)
            state = channel.get_state()

    task = asyncio.create_task(watch())
    await asyncio.sleep(seconds)
    task.cancel()
    return states


@pytest_asyncio.fixture
async def pinging_channel() -> AsyncIterator[Callable[[int], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def connect(port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                            options=client_options(time_s=1, timeout_s=5))
        channels.append(channel)
        return channel

    yield connect
    for channel in channels:
        await channel.close()


@pytest.mark.parametrize(("keepalive", "kept"), [
    (Keepalive(time_s=60, timeout_s=20, min_client_interval_s=0.5), True),
    (GRPC_DEFAULTS, False),
], ids=["ours", "grpc-defaults"])
async def test_idle_client_pinging_at_twice_the_minimum_interval_keeps_its_connection(
        pinging_channel, keepalive, kept):
    server, port = await start_server(keepalive)
    channel = pinging_channel(port)
    await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=grpc_server.LIVENESS), timeout=5)
    # Three pings too soon and the server sends GOAWAY too_many_pings: the channel goes IDLE.
    states = await states_while_idle(channel, 4.5)
    await server.stop(0)
    assert (states == ["READY"]) is kept, states


@pytest.mark.parametrize(("keepalive", "dropped"), [
    (Keepalive(time_s=1, timeout_s=1, min_client_interval_s=5), True),
    (GRPC_DEFAULTS, False),
], ids=["ours", "grpc-defaults"])
async def test_call_of_a_client_that_stops_answering_pings_is_cancelled(keepalive, dropped):
    hold = Hold()
    server, port = await start_server(keepalive, hold)
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDING_CLIENT, f"127.0.0.1:{port}")
    try:
        await asyncio.wait_for(hold.started.wait(), timeout=30)
        client.send_signal(signal.SIGSTOP)
        # Ours: time_s until the next ping, timeout_s for its answer, then the call is gone.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hold.ended.wait(), timeout=4)
        assert hold.ended.is_set() is dropped
    finally:
        client.kill()
        client.send_signal(signal.SIGCONT)
        await client.wait()
        await server.stop(0)


def test_settings_reach_the_server_options(monkeypatch):
    monkeypatch.setenv("EMBEDDER_KEEPALIVE_TIME_S", "30")
    monkeypatch.setenv("EMBEDDER_KEEPALIVE_TIMEOUT_S", "5")
    monkeypatch.setenv("EMBEDDER_MIN_CLIENT_PING_INTERVAL_S", "2.5")
    keepalive = EmbedderSettings().keepalive()
    assert keepalive == Keepalive(time_s=30, timeout_s=5, min_client_interval_s=2.5)
    options = dict(keepalive.channel_options())
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 5_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2_500
    assert options["grpc.keepalive_permit_without_calls"] == 1
