"""The HTTP/JSON face: the search API at the protos' google.api.http routes, on the real
services (Milvus Lite, the bundled model), with the gRPC path's tokens, limits and errors."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from imagesearch.serving.grpc_server import PortUnavailable
from search_service.server import SERVICE, SearchServer
from search_service.transports.http_gateway import HTTP_STATUS, routes
from tests.certs import make_certs
from tests.milvus_server import free_port
from tests.search_fixtures import scene_images, search_settings


@pytest_asyncio.fixture
async def http(embedder_server: Any, tmp_path: Any) -> AsyncIterator[aiohttp.ClientSession]:
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0,
                                          auth_tokens="admin-token,reader read:open*"))
    await server.start()
    try:
        async with aiohttp.ClientSession(
                f"http://127.0.0.1:{server.http_port}",
                headers={"Authorization": "Bearer admin-token"}) as session:
            yield session
    finally:
        await server.stop(grace=0)


def test_every_unary_call_has_a_route_and_the_ingest_stream_has_none() -> None:
    routed = {route.method.name for route in routes(SERVICE)}
    assert routed == {m.name for m in SERVICE.methods} - {"IngestImages"}
    assert {(r.verb, r.path.pattern) for r in routes(SERVICE)} >= {
        ("GET", "/v1/collections/(?P<name>[^/:]+)"),
        ("POST", "/v1/collections/(?P<collection>[^/:]+):search")}


async def test_collections_images_and_searches_round_trip_as_json(http) -> None:
    created = await _ok(http.post("/v1/collections", json={"name": "open-pets"}))
    assert created["collection"]["name"] == "open-pets"
    items = scene_images(6, seed=3)
    added = await _ok(http.post("/v1/collections/open-pets/images", json={"images": [
        {"id": i, "data": base64.b64encode(d).decode(), "metadata": {
            "colour": {"stringValue": s.colour}}} for i, d, s in items]
        + [{"id": "broken", "data": base64.b64encode(b"not an image").decode()}]}))
    codes = [r.get("code", 0) for r in added["results"]]
    assert codes == [0] * 6 + [grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    got = await _ok(http.get("/v1/collections/open-pets"))
    assert got["collection"]["imageCount"] == "6"  # int64: a string in the JSON mapping
    image_id, _, scene = items[2]
    found = await _ok(http.post("/v1/collections/open-pets:search", json={
        "queries": [{"imageId": image_id}], "topK": 3}))
    assert found["results"][0]["hits"][0]["id"] == image_id
    by_text = await _ok(http.post("/v1/collections/open-pets:search", json={
        "queries": [{"text": f"a {scene.colour} {scene.shape}"}], "top_k": 6}))
    assert len(by_text["results"][0]["hits"]) == 6
    page = await _ok(http.get("/v1/collections/open-pets/images",
                              params={"page_size": "4"}))
    assert [i["id"] for i in page["images"]] == sorted(i for i, _, _ in items)[:4]
    assert page["nextPageToken"]
    await _ok(http.post("/v1/collections/open-pets/images:delete", json={"ids": [image_id]}))
    left = await _ok(http.post("/v1/collections/open-pets/images:get",
                               json={"ids": [image_id, items[0][0]]}))
    assert ([i["id"] for i in left["images"]], left["missingIds"]) == ([items[0][0]],
                                                                        [image_id])
    await _ok(http.delete("/v1/collections/open-pets"))
    await _error(http.get("/v1/collections/open-pets"), 404, grpc.StatusCode.NOT_FOUND,
                 "collection 'open-pets' does not exist")


async def test_errors_are_the_grpc_statuses_as_http_statuses_with_the_same_message(http):
    await _ok(http.post("/v1/collections", json={"name": "open-a"}))
    await _error(http.post("/v1/collections", json={"name": "open-a"}), 409,
                 grpc.StatusCode.ALREADY_EXISTS, "collection 'open-a' already exists")
    await _error(http.post("/v1/collections", json={"name": "Bad Name"}), 400,
                 grpc.StatusCode.INVALID_ARGUMENT, "collection name 'Bad Name' is invalid")
    await _error(http.post("/v1/collections/open-a:search", data=b"{not json"), 400,
                 grpc.StatusCode.INVALID_ARGUMENT, "not a SearchRequest in the protobuf JSON")
    await _error(http.post("/v1/collections/open-a:search", json={"topKay": 3}), 400,
                 grpc.StatusCode.INVALID_ARGUMENT, "topKay")
    await _error(http.get("/v1/collections", params={"page_size": "many"}), 400,
                 grpc.StatusCode.INVALID_ARGUMENT, "page_size")
    await _error(http.get("/v1/collections", params={"nope": "1"}), 400,
                 grpc.StatusCode.INVALID_ARGUMENT, "no query parameter 'nope'")
    await _error(http.get("/v1/nowhere"), 404, grpc.StatusCode.NOT_FOUND, "no route GET")
    async with http.put("/v1/collections/open-a") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "DELETE, GET"
    await _error(http.post("/v1/collections/open-a:search", json={"queries": []}), 400,
                 grpc.StatusCode.INVALID_ARGUMENT, "queries")


async def test_tokens_and_scopes_are_the_grpc_ones(http, embedder_server) -> None:
    await _ok(http.post("/v1/collections", json={"name": "open-b"}))
    await _ok(http.post("/v1/collections", json={"name": "closed"}))
    base = str(http._base_url)
    async with aiohttp.ClientSession(base) as anonymous:
        await _error(anonymous.get("/v1/collections"), 401, grpc.StatusCode.UNAUTHENTICATED,
                     "missing bearer token")
    async with aiohttp.ClientSession(base, headers={"Authorization": "Bearer wrong"}) as bad:
        await _error(bad.get("/v1/collections"), 401, grpc.StatusCode.UNAUTHENTICATED,
                     "invalid bearer token")
    async with aiohttp.ClientSession(base, headers={"Authorization": "Bearer reader"}) as reader:
        listed = await _ok(reader.get("/v1/collections"))
        assert [c["name"] for c in listed["collections"]] == ["open-b"]
        await _error(reader.get("/v1/collections/closed"), 403,
                     grpc.StatusCode.PERMISSION_DENIED, "may not read collection 'closed'")
        await _error(reader.delete("/v1/collections/open-b"), 403,
                     grpc.StatusCode.PERMISSION_DENIED, "may not manage collection 'open-b'")


async def test_a_body_over_the_message_limit_is_refused_before_any_call(embedder_server,
                                                                         tmp_path) -> None:
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0, max_message_bytes=1 << 20))
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as session:
            await _ok(session.post("/v1/collections", json={"name": "small"}))
            huge = base64.b64encode(b"x" * (2 << 20)).decode()
            await _error(session.post("/v1/collections/small/images", json={
                "images": [{"id": "big", "data": huge}]}), 413,
                grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than the message limit")
            got = await _ok(session.get("/v1/collections/small"))
            assert got["collection"]["imageCount"] == "0"
    finally:
        await server.stop(grace=0)


@pytest.mark.parametrize("mutual", [False, True])
async def test_with_tls_the_http_port_is_https_under_the_grpc_ports_policy(
        embedder_server: Any, tmp_path: Any, mutual: bool) -> None:
    """TLS on the gRPC port makes the HTTP port HTTPS with the same certificate, and mutual
    TLS there requires client certificates here too; nothing is served in plaintext."""
    certs = make_certs(tmp_path)
    server = SearchServer(search_settings(
        tmp_path / "search.db", embedder_server.port, http_port=0,
        tls_cert_file=certs["server.pem"], tls_key_file=certs["server.key"],
        tls_client_ca_file=certs["ca.pem"] if mutual else None))
    await server.start()
    base = f"https://localhost:{server.http_port}"
    trusting = ssl.create_default_context(cafile=certs["ca.pem"])
    known = ssl.create_default_context(cafile=certs["ca.pem"])
    known.load_cert_chain(certs["client.pem"], certs["client.key"])
    try:
        async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(
                ssl=known)) as session:
            await _ok(session.post("/v1/collections", json={"name": "over-tls"}))
            got = await _ok(session.get("/v1/collections/over-tls"))
            assert got["collection"]["name"] == "over-tls"
            async with session.get("/") as page:
                assert page.status == 200 and page.content_type == "text/html"
        async with aiohttp.ClientSession() as session:
            if mutual:  # no client certificate: no connection
                with pytest.raises(aiohttp.ClientError):
                    await session.get(f"{base}/v1/collections", ssl=trusting)
            else:
                async with session.get(f"{base}/v1/collections", ssl=trusting) as answer:
                    assert answer.status == 200
            with pytest.raises(aiohttp.ClientError):  # plaintext is not served
                await session.get(f"http://127.0.0.1:{server.http_port}/v1/collections")
    finally:
        await server.stop(grace=0)


def test_every_grpc_status_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


async def _ok(request: Any) -> dict[str, Any]:
    async with request as response:
        body = await response.json()
        assert response.status == 200, body
        return dict(body)


async def _error(request: Any, status: int, code: grpc.StatusCode, message: str) -> None:
    async with request as response:
        body = await response.json()
        assert (response.status, body["code"]) == (status, code.value[0]), body
        assert message in body["message"], body


async def test_an_http_port_in_use_fails_start_up_with_its_reason(embedder_server,
                                                                  tmp_path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                              http_port=port))
        with pytest.raises(PortUnavailable, match=f"cannot listen on 127.0.0.1:{port} for "
                                                   "HTTP/JSON"):
            await server.start()
