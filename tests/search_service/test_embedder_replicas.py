"""The search service over several embedder replicas: one that freezes (its node lost, its
process stuck) leaves the rotation through keepalive, one that reports NOT_SERVING (its model
stalled, or draining) through client-side health checking, and calls go on to the others.

Two real embedder processes, as behind a headless Service; "freezing" one is SIGSTOP: its
kernel keeps the connection open, but nothing answers on it any more. Keepalive is scaled down
from the defaults (20 s + 10 s) so that the test takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedder_service.server import EmbedderServer
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service import server as server_module
from search_service.adapters.embedder_grpc import embedder_channel
from search_service.server import SearchServer
from tests.conftest import embedder_settings
from tests.milvus_server import free_port
from tests.search_fixtures import add, scene_images, search_settings

SERVING = health_pb2.HealthCheckResponse.SERVING


class Replica:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process, self.port = process, port

    @classmethod
    async def start(cls, log: Path) -> Replica:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDER_")}
        env.update({"EMBEDDER_PORT": str(port), "EMBEDDER_LOG_FORMAT": "text",
                    "EMBEDDER_INTRA_OP_THREADS": "1", "EMBEDDER_DECODE_THREADS": "1",
                    "EMBEDDER_MIN_CLIENT_PING_INTERVAL_S": "0.5"})
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("imagesearch-embedder")), env=env,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        return cls(process, port)

    async def wait_serving(self, timeout_s: float = 60) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(int(timeout_s / 0.2)):
                assert self.process.returncode is None, "the embedder exited"
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("the embedder never became SERVING")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            self.process.send_signal(signal.SIGCONT)
            await self.process.wait()


@pytest_asyncio.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[list[Replica]]:
    started = [await Replica.start(tmp_path / f"embedder-{i}.log") for i in range(2)]
    try:
        await asyncio.gather(*(r.wait_serving() for r in started))
        yield started
    finally:
        for replica in started:
            await replica.stop()


async def search_all(stub: search_pb2_grpc.SearchServiceStub, count: int) -> list[str]:
    """`count` text searches at once; the failures' status codes."""
    async def one(index: int) -> str | None:
        try:
            response = await stub.Search(pb.SearchRequest(
                collection="c", top_k=1, queries=[pb.Query(text=f"a red circle {index}")]),
                timeout=10)
        except grpc.aio.AioRpcError as err:
            return err.code().name
        status = response.results[0].status
        return None if status.code == 0 else f"item {status.code}: {status.message}"

    return [f for f in await asyncio.gather(*(one(i) for i in range(count))) if f]


@contextlib.asynccontextmanager
async def search_over(tmp_path: Path, ports: list[int], **settings: object
                      ) -> AsyncIterator[search_pb2_grpc.SearchServiceStub]:
    """A search service on every embedder port (as a headless Service resolves), its
    calls to them cut at 2 s, with an empty collection "c"."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    server = SearchServer(search_settings(tmp_path / "search.db", 0, embedder_target=target,
                                          embedder_timeout_s=2.0, **settings))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="c"), timeout=20)
            yield stub
    finally:
        await server.stop(grace=1)


def assert_answered(failures: list[str], all_answered: bool) -> None:
    if all_answered:
        assert failures == []
    else:
        # Those round_robin sent to the bad replica, after the 2 s embedder deadline.
        assert failures and set(failures) == {"UNAVAILABLE"}, failures


@pytest.mark.parametrize(("keepalive_s", "timeout_s", "all_answered"), [
    (1.0, 1.0, True),
    # gRPC's defaults: no keepalive pings, 20 s (any ping's timeout: 60 s).
    (7200.0, 20.0, False),
], ids=["keepalive", "grpc-defaults"])
async def test_frozen_embedder_replica_leaves_the_rotation(tmp_path, replicas, keepalive_s,
                                                           timeout_s, all_answered):
    async with search_over(tmp_path, [r.port for r in replicas],
                           embedder_keepalive_s=keepalive_s,
                           embedder_keepalive_timeout_s=timeout_s) as stub:
        await add(stub, "c", scene_images(4, seed=5))
        assert await search_all(stub, 8) == []
        replicas[1].process.send_signal(signal.SIGSTOP)
        # keepalive_s until the next ping, timeout_s for its answer, 2 s to spare.
        await asyncio.sleep(4)
        assert_answered(await search_all(stub, 8), all_answered)


@pytest.mark.parametrize("health_checked", [True, False], ids=["health-checked", "unchecked"])
async def test_replica_that_reports_not_serving_gets_no_new_calls(tmp_path, monkeypatch,
                                                                  health_checked):
    if not health_checked:  # what the channel did before: connectivity alone
        monkeypatch.setattr(server_module, "embedder_channel",
                            functools.partial(embedder_channel, health_checked=False))
    embedders = [EmbedderServer(embedder_settings(model_stall_timeout_s=0.3)) for _ in range(2)]
    for embedder in embedders:
        await embedder.start()
    # Replica 1's text tower hangs: its watchdog reports NOT_SERVING, its connection is fine.
    release = threading.Event()
    tower = embedders[1].holder.embedder._texts[0].tower  # the default text tower
    real_run = tower.run
    tower.run = lambda ids: (release.wait(30), real_run(ids))[1]
    try:
        async with search_over(tmp_path, [e.port for e in embedders]) as stub:
            await search_all(stub, 8)  # some reach replica 1 and stall it
            await asyncio.sleep(1)  # its watchdog has reported NOT_SERVING by now
            assert_answered(await search_all(stub, 8), health_checked)
    finally:
        release.set()
        for embedder in embedders:
            await embedder.stop(grace=0)
