"""The HTTP/JSON gateway under hostile and careless use (found by an outside review): odd
paths, headers and bodies, limits, scopes, shutdown, IPv6 hosts."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from search_service.application import SearchApp
from search_service.server import SearchServer
from tests.search_fixtures import search_settings

TOKENS = "admin-token,reader read:open*"


@pytest_asyncio.fixture
async def srv(embedder_server: Any, tmp_path: Any) -> AsyncIterator[SearchServer]:
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0, auth_tokens=TOKENS))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


def _session(server: SearchServer, token: str | None = "admin-token") -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}", headers=headers)


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends raw bytes, returns (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def _status_json(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


# ---- path tricks -----------------------------------------------------------------------

async def test_non_utf8_bytes_in_the_path_get_a_json_error_not_a_500(srv) -> None:
    status, _headers, body = await _raw(srv.http_port, (
        b"GET /v1/collections/\xff\xfe HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer admin-token\r\nConnection: close\r\n\r\n"))
    assert status in (400, 404), (status, body)  # aiohttp's parser refuses it: fine


async def test_encoded_slash_dot_dot_and_nul_in_the_path_are_bad_names(srv) -> None:
    async with _session(srv) as s:
        await (await s.post("/v1/collections", json={"name": "open-a"})).read()
    for raw in ("open-a%2F..%2Fclosed", "..", "%2E%2E", "open-a%00", "%FF", "%C3%A9",
                "open%2A", "ope%6E-a%3Asearch", "open-a%3Asearch", "x" * 5000):
        status, _, body = await _raw(srv.http_port, (
            f"GET /v1/collections/{raw} HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Bearer admin-token\r\nConnection: close\r\n\r\n").encode())
        assert status in (400, 404), (raw, status, body)
        assert json.loads(body)["code"] in (3, 5), (raw, body)


async def test_reader_cannot_reach_closed_via_body_when_path_is_open(srv) -> None:
    async with _session(srv) as admin:
        for name in ("open-a", "closed"):
            await (await admin.post("/v1/collections", json={"name": name})).read()
    async with _session(srv, "reader") as reader:
        # body names closed, path names open-a: must act on open-a only
        async with reader.post("/v1/collections/open-a:search",
                               json={"collection": "closed", "queries": [{"text": "x"}]}) as r:
            status, body = await _status_json(r)
            assert status == 200, body
        async with reader.get("/v1/collections/open-a/images",
                              params={"collection": "closed"}) as r:
            status, body = await _status_json(r)
            assert status == 200, body
        # percent-encoded name that unquotes to a closed one is still denied
        async with reader.get("/v1/collections/%63losed") as r:
            status, body = await _status_json(r)
            assert status == 403, body


# ---- headers ---------------------------------------------------------------------------

async def test_a_non_ascii_authorization_header_is_401_json_not_500(srv) -> None:
    status, headers, body = await _raw(srv.http_port, (
        "GET /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\u00f6ken\r\n"
        "Connection: close\r\n\r\n").encode("utf-8"))
    assert status == 401, (status, body)
    assert headers.get("content-type", "").startswith("application/json"), (status, body)


async def test_after_a_non_ascii_authorization_header_the_gateway_still_works(srv) -> None:
    for value in ("Bearer t\u00f6ken", "Bearer \u00ff"):
        await _raw(srv.http_port, (
            f"GET /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\n"
            "Connection: close\r\n\r\n").encode())
    async with _session(srv) as s, s.get("/v1/collections") as r:
        assert r.status == 200


async def test_odd_authorization_headers_are_401(srv) -> None:
    for value in ("", "Bearer", "Bearer ", "bearer admin-token-x", "Basic YWRtaW4=",
                  "Bearer  admin-token ", "Token admin-token"):
        status, _, body = await _raw(srv.http_port, (
            f"GET /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\n"
            "Connection: close\r\n\r\n").encode())
        expected = 200 if value == "Bearer  admin-token " else 401
        assert status == expected, (value, status, body)


async def test_two_authorization_headers(srv) -> None:
    """The gateway forwards only the first; the second must not grant anything."""
    status, _, body = await _raw(srv.http_port, (
        b"DELETE /v1/collections/open-x HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer reader\r\nAuthorization: Bearer admin-token\r\n"
        b"Connection: close\r\n\r\n"))
    assert status in (400, 403), (status, body)


async def test_head_and_options(srv) -> None:
    async with _session(srv) as s:
        for method in ("HEAD", "OPTIONS", "PATCH", "TRACE"):
            async with s.request(method, "/v1/collections") as r:
                await r.read()
                assert r.status in (404, 405, 501), (method, r.status)


# ---- bodies ----------------------------------------------------------------------------

async def test_hostile_bodies_get_400_json(srv) -> None:
    async with _session(srv) as s:
        await (await s.post("/v1/collections", json={"name": "open-a"})).read()
        for body in (b"", b" ", b"null", b"123", b"[]", b'"x"', b"\xff\xfe\x00",
                     b"[" * 200_000, b'{"topK": 1e999}', b'{"topK": NaN}',
                     b'{"topK": 1, "topK": 2}', b'{"queries": [{"nested": {"a": {"b": 1}}}]}',
                     b'{"topK": "3", "queries": [{"text": "\\ud800"}]}',
                     b'{"minSimilarity": "NaN", "queries": [{"text": "cat"}]}',
                     b'{"minSimilarity": "Infinity", "queries": [{"text": "cat"}]}'):
            async with s.post("/v1/collections/open-a:search", data=body) as r:
                status, parsed = await _status_json(r)
                assert isinstance(parsed, dict) and status == 400, (body[:40], status, parsed)


async def test_get_with_a_body_and_wrong_content_type_is_harmless(srv) -> None:
    async with _session(srv) as s, s.get("/v1/collections", data=b'{"pageSize": "x"}',
                     headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200


async def test_gzip_bomb_is_refused_quickly(embedder_server: Any, tmp_path: Any) -> None:
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0, max_message_bytes=1 << 20))
    await server.start()
    try:
        bomb = gzip.compress(b"{" + b" " * (300 << 20) + b"}", compresslevel=9)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as s:
            started = time.monotonic()
            async with s.post("/v1/collections", data=bomb,
                              headers={"Content-Encoding": "gzip",
                                       "Content-Type": "application/json"}) as r:
                status, body = await _status_json(r)
            assert status == 413, (status, body)
            assert time.monotonic() - started < 10
    finally:
        await server.stop(grace=0)


async def test_a_body_between_the_message_limit_and_the_http_limit_is_413_not_429(
        embedder_server: Any, tmp_path: Any) -> None:
    """A JSON body under client_max_size whose message is over max_message_bytes: the gRPC
    client refuses it RESOURCE_EXHAUSTED, which the gateway maps to 429 Too Many Requests -
    a status clients retry, forever, for a request that can never succeed."""
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0, max_message_bytes=1 << 20))
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as s:
            await (await s.post("/v1/collections", json={"name": "small"})).read()
            data = base64.b64encode(b"x" * ((1 << 20) + 1000)).decode()  # ~1.33 MiB JSON
            async with s.post("/v1/collections/small/images",
                              json={"images": [{"id": "big", "data": data}]}) as r:
                status, body = await _status_json(r)
            assert status == 413, (status, body)
    finally:
        await server.stop(grace=0)


# ---- concurrency and shutdown ----------------------------------------------------------

async def test_many_parallel_requests(srv) -> None:
    async with _session(srv) as s:
        await (await s.post("/v1/collections", json={"name": "open-a"})).read()

        async def one(n: int) -> int:
            path = "/v1/collections/open-a" if n % 2 else "/v1/collections"
            async with s.get(path) as r:
                await r.read()
                return r.status
        statuses = await asyncio.gather(*(one(n) for n in range(300)))
        assert set(statuses) == {200}


async def test_stop_with_a_slow_http_call_in_flight_honours_the_grace(
        srv, monkeypatch: pytest.MonkeyPatch) -> None:
    """stop(grace=0) should not wait for the HTTP gateway's in-flight calls (aiohttp's own
    60 s shutdown_timeout), nor should the in-flight call hang forever."""
    original = SearchApp.list_collections

    async def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(20)
        return await original(self, *args, **kwargs)
    monkeypatch.setattr(SearchApp, "list_collections", slow)
    async with _session(srv) as s:
        pending = asyncio.ensure_future(s.get("/v1/collections"))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await srv.stop(grace=0)
        took = time.monotonic() - started
        try:
            response = await asyncio.wait_for(pending, 30)
            outcome: Any = response.status
        except Exception as err:
            outcome = type(err).__name__
    assert took < 5, (took, outcome)


async def test_http_calls_while_stopping_get_503_or_refused_not_hang(
        srv, monkeypatch: pytest.MonkeyPatch) -> None:
    original = SearchApp.list_collections

    async def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(2)
        return await original(self, *args, **kwargs)
    monkeypatch.setattr(SearchApp, "list_collections", slow)
    async with _session(srv) as s:
        first = asyncio.ensure_future(s.get("/v1/collections"))
        await asyncio.sleep(0.3)
        stopping = asyncio.ensure_future(srv.stop(grace=5))
        await asyncio.sleep(0.3)
        try:
            async with s.get("/v1/collections/x") as r:
                late: Any = r.status
        except aiohttp.ClientError as err:
            late = type(err).__name__
        r1 = await asyncio.wait_for(first, 30)
        assert r1.status == 200
        await asyncio.wait_for(stopping, 30)
    assert late != 200, late


# ---- configuration ---------------------------------------------------------------------

async def test_http_gateway_on_an_ipv6_loopback_host_reaches_grpc(
        embedder_server: Any, tmp_path: Any) -> None:
    """SEARCH_HOST=::1 with SEARCH_HTTP_PORT: the gateway's target is '::1:<port>'."""
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          host="[::1]", http_port=0))
    try:
        await server.start()
    except Exception as err:  # no IPv6 here
        pytest.skip(f"no IPv6 loopback: {err}")
    try:
        async with aiohttp.ClientSession(f"http://[::1]:{server.http_port}") as s, s.get(
                "/v1/collections") as r:
            status, body = await _status_json(r)
        assert status == 200, (status, body)
    finally:
        await server.stop(grace=0)


def test_grpc_status_codes_not_mapped_as_is() -> None:
    from search_service.transports.http_gateway import HTTP_STATUS
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503


@pytest.mark.parametrize("host", ["[::]"])  # "::" fails in gRPC itself, before the gateway
async def test_http_gateway_on_an_ipv6_wildcard_host(embedder_server: Any, tmp_path: Any,
                                                     host: str) -> None:
    """_loopback() names '::' and '[::]' as wildcard hosts, so both are meant to work."""
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          host=host, http_port=0))
    try:
        await server.start()
    except Exception as err:
        pytest.fail(f"start-up with host={host!r} and http_port failed: {err!r}")
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as s, s.get(
                "/v1/collections") as r:
            status, body = await _status_json(r)
        assert status == 200, (status, body)
    finally:
        await server.stop(grace=0)
