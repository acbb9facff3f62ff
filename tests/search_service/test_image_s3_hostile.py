"""The S3 image store under hostile and careless use (found by an outside review): odd ids,
races, a hung or unreachable store, missing credentials."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import boto3
import pytest

from search_service.adapters.image_s3 import S3ImageStore
from search_service.errors import ImageStoreUnavailable
from tests.search_service.test_image_s3 import (  # noqa: F401  (fixtures)
    _keys,
    new_bucket,
    s3_credentials,
    s3_endpoint,
)


@pytest.fixture(autouse=True)
def no_imds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def blackhole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a hung object store)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


ODD_IDS = ["", " ", "\x00", "\n", "%2F", "a" * 10_000, "\u202e", "😀", "\udc80"]


async def test_odd_ids_round_trip(s3_endpoint: str) -> None:  # noqa: F811
    store = S3ImageStore(f"s3://{new_bucket(s3_endpoint)}/p", s3_endpoint)
    try:
        await store.put("k", "copy", [(i, i.encode("utf-8", "surrogatepass")) for i in ODD_IDS])
        got = await store.get("k", "copy", ODD_IDS)
        assert got == {i: i.encode("utf-8", "surrogatepass") for i in ODD_IDS}
        await store.delete("k", ODD_IDS)
        assert await store.get("k", "copy", ODD_IDS) == {}
    finally:
        await store.close()


async def test_concurrent_put_and_delete_of_one_id_end_whole(s3_endpoint: str) -> None:  # noqa: F811
    store = S3ImageStore(f"s3://{new_bucket(s3_endpoint)}", s3_endpoint)
    try:
        value = b"v" * 50_000
        ops = []
        for n in range(40):
            ops.append(store.put("k", "copy", [("same", value)]) if n % 2
                       else store.delete("k", ["same"]))
        await asyncio.gather(*ops)
        got = await store.get("k", "copy", ["same"])
        assert got in ({}, {"same": value})
    finally:
        await store.close()


async def test_a_hung_endpoint_fails_within_the_timeout(blackhole: str) -> None:
    """No retries, and a batch fails at its first failure: minutes before (3 tries each, one
    wave of threads after another)."""
    store = S3ImageStore("s3://some-bucket", blackhole, threads=4, timeout_s=1)
    try:
        started = time.monotonic()
        with pytest.raises(ImageStoreUnavailable, match="ReadTimeout"):
            await store.get("k", "copy", ["a"])
        single = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(ImageStoreUnavailable):
            await store.put("k", "copy", [(f"i{n}", b"x") for n in range(8)])
        batch = time.monotonic() - started
    finally:
        await store.close()
    # A read within about timeout_s, a write within 2 x (it waits for "100 Continue", then
    # the answer); a batch no longer than one write: after the first failure the
    # requests not yet begun are skipped (8 writes on 4 threads took 8 s before).
    print(f"hung store: a read failed in {single:.2f} s, a batch of writes in {batch:.2f} s")
    assert single < 3 and batch < 5, (single, batch)


async def test_close_does_not_block_the_event_loop(blackhole: str) -> None:
    """close() shuts the pool with wait=True from a coroutine: the loop stalls while a hung
    request is in flight."""
    store = S3ImageStore("s3://some-bucket", blackhole, threads=2, timeout_s=2)
    pending = asyncio.ensure_future(store.get("k", "copy", ["a"]))
    await asyncio.sleep(0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.1)
            ticks += 1
    ticker = asyncio.ensure_future(tick())
    started = time.monotonic()
    await store.close()
    took = time.monotonic() - started
    ticker.cancel()
    with pytest.raises(ImageStoreUnavailable):
        await pending
    assert ticks >= int(took / 0.1) // 2, (took, ticks)


async def test_missing_credentials_are_unavailable_and_quick(
        s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    bucket = new_bucket(s3_endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    store = S3ImageStore(f"s3://{bucket}", s3_endpoint)
    try:
        started = time.monotonic()
        with pytest.raises(ImageStoreUnavailable, match="NoCredentials"):
            await store.check()
        with pytest.raises(ImageStoreUnavailable, match="NoCredentials"):
            await store.put("k", "copy", [("a", b"x")])
        assert time.monotonic() - started < 5
    finally:
        await store.close()


async def test_wrong_credentials_are_unavailable(s3_endpoint: str) -> None:  # noqa: F811
    """moto accepts any keys; only asserting the mapping of a ClientError code."""
    store = S3ImageStore("s3://Bad_Bucket", s3_endpoint)
    try:
        with pytest.raises(ImageStoreUnavailable):
            await store.put("k", "copy", [("a", b"x")])
    finally:
        await store.close()


def test_bucket_listing_shows_nothing_of_the_ids(s3_endpoint: str) -> None:  # noqa: F811
    bucket = new_bucket(s3_endpoint)
    store = S3ImageStore(f"s3://{bucket}", s3_endpoint)
    asyncio.run(store.put("secret-collection", "copy", [("alice@example.com.jpg", b"x")]))
    asyncio.run(store.close())
    keys = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    text = str(keys)
    assert "alice" not in text and "secret" not in text


# ---- end to end: the service over a Lite file with an S3 image store -----------------------

async def test_http_add_images_with_a_hung_object_store_answers_503_promptly(
        embedder_server, tmp_path, blackhole: str) -> None:
    import base64

    import aiohttp

    from search_service.server import SearchServer
    from tests.search_fixtures import scene_images, search_settings
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0, image_store="s3://some-bucket",
                                          image_store_endpoint=blackhole))
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as s:
            async with s.post("/v1/collections", json={"name": "hung"}) as r:
                assert r.status == 200, await r.text()
            (image_id, data, _), = scene_images(1, seed=1)
            started = time.monotonic()
            async with s.post("/v1/collections/hung/images", json={"images": [
                    {"id": image_id, "data": base64.b64encode(data).decode()}]},
                    timeout=aiohttp.ClientTimeout(total=120)) as r:
                status, body = r.status, await r.text()
            took = time.monotonic() - started
        assert status == 503, (status, body)
        assert took < 15, (took, body)
    finally:
        await server.stop(grace=0)




class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers the first `failures` requests with S3's 500 InternalError and forwards the
    rest to the real store at `upstream`."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    failures = 0
    seen: list[str]

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.command)
        if len(self.seen) <= self.failures:
            error = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError"
                     b"</Code><Message>We encountered an internal error.</Message></Error>")
            self.send_response(500)
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(error)
            return
        upstream = http.client.HTTPConnection(urlsplit(self.upstream).netloc, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
        upstream.request(self.command, self.path, body, headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _flaky_store(upstream: str, failures: int) -> Iterator[tuple[str, list[str]]]:
    handler = type("Flaky", (_Flaky,), {"upstream": upstream, "failures": failures,
                                        "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_server_error_is_retried_and_the_write_lands(s3_endpoint: str,  # noqa: F811
                                                             failures: int) -> None:
    """S3 answers 500 InternalError and 503 SlowDown now and then, and asks clients to retry
    (as a CI run of moto did under concurrent writes of one key)."""
    bucket = new_bucket(s3_endpoint)
    with _flaky_store(s3_endpoint, failures) as (endpoint, seen):
        store = S3ImageStore(f"s3://{bucket}", endpoint)
        await store.put("k", "copy", [("a", b"pixels")])
        assert seen[:failures + 1] == ["PUT"] * (failures + 1)
        assert await store.get("k", "copy", ["a"]) == {"a": b"pixels"}
        await store.close()


async def test_a_store_that_keeps_failing_is_unavailable_after_three_tries(
        s3_endpoint: str) -> None:  # noqa: F811
    bucket = new_bucket(s3_endpoint)
    with _flaky_store(s3_endpoint, 10**6) as (endpoint, seen):
        store = S3ImageStore(f"s3://{bucket}", endpoint)
        started = time.monotonic()
        with pytest.raises(ImageStoreUnavailable, match=r"\(InternalError\); retry shortly"):
            await store.put("k", "copy", [("a", b"pixels")])
        assert len(seen) == 3 and time.monotonic() - started < 2, seen
        with pytest.raises(ImageStoreUnavailable, match=r"\(500\)"):  # HEAD: no error body
            await store.check()
        await store.close()
