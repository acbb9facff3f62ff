"""Bearer-token authentication on the search service."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch import cli
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from imagesearch.serving.auth import load_tokens
from search_service.server import SearchServer
from tests.search_fixtures import search_settings

TOKEN = "s3cret-token"


@pytest.fixture
async def guarded(tmp_path, embedder_server):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# one per line\n{TOKEN}\nsecond-token\n")
    server = SearchServer(search_settings(tmp_path / "auth.db", embedder_server.port,
                                          auth_tokens_file=tokens))
    await server.start()
    yield server
    await server.stop(grace=1)


def test_tokens_come_from_env_and_file(tmp_path):
    path = tmp_path / "t"
    path.write_text("# comment\nfrom-file\n\n")
    assert load_tokens(" a, b ,", path) == ["a", "b", "from-file"]


async def test_calls_need_a_valid_bearer_token(guarded):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        request = pb.ListCollectionsRequest()
        for metadata, details in [
            ((), "missing bearer token: send metadata 'authorization: Bearer <token>'"),
            ((("authorization", "Bearer wrong"),), "invalid bearer token"),
            ((("authorization", f"Basic {TOKEN}"),), "invalid bearer token"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListCollections(request, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert caught.value.details() == details
        await stub.ListCollections(request, metadata=(("authorization", f"Bearer {TOKEN}"),))
        await stub.ListCollections(request, metadata=(("authorization", "Bearer second-token"),))

        async def one():
            yield pb.IngestImagesRequest(collection="x", image=pb.NewImage(id="a", data=b"x"))

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [r async for r in stub.IngestImages(one())]
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status in (health_pb2.HealthCheckResponse.SERVING,
                                 health_pb2.HealthCheckResponse.NOT_SERVING)


async def test_cli_sends_its_token(guarded, capsys):
    address = f"127.0.0.1:{guarded.port}"
    code = await asyncio.to_thread(cli.main, ["--server", address, "collections"])
    assert code == 2 and "UNAUTHENTICATED" in capsys.readouterr().err
    code = await asyncio.to_thread(cli.main, ["--server", address, "--token", TOKEN,
                                              "collections"])
    assert code == 0


@pytest.mark.parametrize("token_source", ["variable", "file"])
async def test_the_search_service_authenticates_to_a_guarded_embedder(tmp_path, token_source):
    from embedder_service.server import EmbedderServer
    from tests.conftest import embedder_settings
    from tests.search_service.test_search_e2e import wait_health

    embedder = EmbedderServer(embedder_settings(auth_tokens="embedder-secret"))
    await embedder.start()
    given = ({"embedder_token": "embedder-secret"} if token_source == "variable" else
             {"embedder_token_file": tmp_path / "t"})
    (tmp_path / "t").write_text("embedder-secret\n")
    guarded = SearchServer(search_settings(tmp_path / "g.db", embedder.port, **given))
    unguarded = SearchServer(search_settings(tmp_path / "u.db", embedder.port))
    try:
        for server in (guarded, unguarded):
            await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as channel:
            await wait_health(channel, serving=True, timeout_s=20)
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="ok"))
            response = await stub.Search(pb.SearchRequest(collection="ok", queries=[
                pb.Query(text="a red circle")]))
            assert response.results[0].status.code == 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{unguarded.port}") as channel:
            await wait_health(channel, serving=False, timeout_s=20)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await search_pb2_grpc.SearchServiceStub(channel).CreateCollection(
                    pb.CreateCollectionRequest(name="refused"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == (
                "the embedder refused this service's credentials (UNAUTHENTICATED): check "
                "SEARCH_EMBEDDER_TOKEN")
    finally:
        for server in (guarded, unguarded):
            await server.stop(grace=0)
        await embedder.stop(grace=0)
