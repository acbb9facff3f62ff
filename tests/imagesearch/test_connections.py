"""Connection management on our servers, scaled down from the defaults to take seconds:

- keepalive: clients may ping idle connections, and a client that stops answering pings has
  its calls cancelled (gRPC's client pings at most once a second);
- max connection age: connections are recycled so clients re-resolve, calls in flight get the
  grace, and new calls never fail for it."""

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
from imagesearch.keepalive import ping_options
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
    """A call that lasts as many seconds as its request says ("" for ever): records its start
    and its end, cancellation included."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def hold(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.started.set()
        try:
            if request:
                await asyncio.sleep(float(request))
            else:
                await asyncio.Event().wait()
        finally:
            self.ended.set()
        return b"done"


async def start_server(keepalive: Keepalive | None = None, hold: Hold | None = None,
                       age_s: float | None = None, grace_s: float = 30
                       ) -> tuple[grpc.aio.Server, int]:
    server, port = grpc_server.create_server(grpc_server.ServerOptions(
        "127.0.0.1", 0, 1 << 20, max_connection_age_s=age_s, max_connection_age_grace_s=grace_s,
        keepalive=keepalive or Keepalive()), [])
    health = grpc_server.add_health_and_reflection(server, [])
    await grpc_server.report_alive(health)
    if hold is not None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "test.Hold", {"Hold": grpc.unary_unary_rpc_method_handler(hold.hold)})])
    await server.start()
    return server, port


async def states_during(channel: grpc.aio.Channel, seconds: float) -> list[str]:
    """The channel's connectivity states over the next `seconds`."""
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
                                            options=ping_options(time_s=1, timeout_s=5))
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
    states = await states_during(channel, 4.5)
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


async def test_aged_connections_are_replaced_without_failing_a_call():
    server, port = await start_server(age_s=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watching = asyncio.create_task(states_during(channel, 3.5))
        for _ in range(30):  # 3 s, one call every 0.1 s
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=grpc_server.LIVENESS), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(0.1)
        states = await watching
    await server.stop(0)
    # GOAWAY at about 1 s and 2 s (gRPC adds +-10% jitter): the channel went IDLE and back.
    assert states.count("IDLE") >= 2, states


async def test_calls_on_an_aged_connection_get_the_grace_then_are_cut():
    hold = Hold()
    server, port = await start_server(hold=hold, age_s=0.5, grace_s=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/test.Hold/Hold")
        within_grace, beyond_grace = await asyncio.gather(
            call(b"1.5", timeout=10), call(b"", timeout=10), return_exceptions=True)
    await server.stop(0)
    assert within_grace == b"done"
    assert isinstance(beyond_grace, grpc.aio.AioRpcError)
    assert beyond_grace.code() == grpc.StatusCode.UNAVAILABLE
