"""The search page, attacked: what a demanding user and a hostile web page do to it.

Each test drives headless Chromium (the `browser` fixture of test_web.py) or the gateway over
plain HTTP, against the real services. Slow responses are made by wrapping window.fetch in the
page (the page calls the global fetch at call time), so the races are deterministic."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.server import SearchServer
from tests.conftest import encode
from tests.search_fixtures import labels, scene_images, search_settings
from tests.search_service.test_web import (  # noqa: F401  (a fixture)
    browser,
    cards,
    thumbnails_loaded,
    wait,
)

pytestmark = pytest.mark.slow
TOKEN = "hostile-token"

# Wraps fetch: records each call's path, and holds back the answer of any call whose path and
# body contain a `window.__slow` entry's strings for its milliseconds.
SLOW_FETCH = """
window.__calls = [];
window.__slow = arguments[0];
const original = window.fetch.bind(window);
window.fetch = async (path, init) => {
  const body = init && init.body ? String(init.body) : "";
  window.__calls.push(String(path));
  const slow = window.__slow.find((s) => String(path).includes(s.path) && body.includes(s.body));
  const response = await original(path, init);
  if (slow) await new Promise((resolve) => setTimeout(resolve, slow.ms));
  return response;
};
"""


async def _serve(tmp_path: Path, embedder_port: int, **settings: Any
                 ) -> tuple[SearchServer, search_pb2_grpc.SearchServiceStub, grpc.aio.Channel]:
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_port, http_port=0,
                                          **settings))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return server, search_pb2_grpc.SearchServiceStub(channel), channel


async def _fill(stub: search_pb2_grpc.SearchServiceStub, name: str, seed: int,
                metadata: Any = ()) -> None:
    await stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=metadata)
    images = [pb.NewImage(id=i, data=d, metadata={**labels(s), "from": pb.MetadataValue(
        string_value=name)}) for i, d, s in scene_images(12, seed=seed)]
    answer = await stub.AddImages(pb.AddImagesRequest(collection=name, images=images),
                                  metadata=metadata)
    assert all(r.code == 0 for r in answer.results)


@pytest_asyncio.fixture
async def two_collections(embedder_server: Any, tmp_path: Path) -> AsyncIterator[str]:
    """No token; 'alpha' and 'beta' hold the same 12 ids with different pictures and a
    'from' metadata naming their collection."""
    server, stub, channel = await _serve(tmp_path, embedder_server.port)
    try:
        await _fill(stub, "alpha", seed=11)
        await _fill(stub, "beta", seed=99)
        yield f"http://127.0.0.1:{server.http_port}/"
    finally:
        await channel.close()
        await server.stop(grace=0)


def _open(driver: Any, url: str, slow: list[dict[str, Any]] | None = None) -> None:
    driver.get(url)
    wait(driver, lambda d: "12 images" in d.find_element("id", "collection-info").text,
         "the collections to load")
    driver.execute_script(SLOW_FETCH, slow or [])


def _choose(driver: Any, collection: str) -> None:
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element("id", "collection")).select_by_value(collection)


def _settled(driver: Any, seconds: float = 3.0) -> None:
    """Lets every held-back answer land (and what it starts, thumbnails, finish)."""
    import time
    time.sleep(seconds)


def _shown_from(driver: Any) -> set[str]:
    """The collections the shown results say they come from (their 'from' metadata)."""
    return {dd.text for card in cards(driver, "results")
            for dt, dd in zip(card.find_elements("css selector", "dt"),
                              card.find_elements("css selector", "dd"), strict=True)
            if dt.text == "from"}


async def test_a_slow_earlier_search_does_not_overwrite_a_later_one(
        browser: Any, two_collections: str) -> None:  # noqa: F811
    await asyncio.to_thread(_out_of_order, browser, two_collections)


def _out_of_order(driver: Any, url: str) -> None:
    _open(driver, url, [{"path": ":search", "body": "red circle", "ms": 1500}])
    query = driver.find_element("id", "query")
    query.send_keys("a red circle\n")
    query.clear()
    query.send_keys("a blue square\n")
    wait(driver, lambda d: "a blue square" in d.find_element("id", "status").text,
         "the second search's results")
    _settled(driver)
    # The first search's answer came last; what is shown must still be the last query's.
    assert "a blue square" in driver.find_element("id", "status").text


async def test_switching_collection_mid_search_shows_no_results_of_the_other_one(
        browser: Any, two_collections: str) -> None:  # noqa: F811
    await asyncio.to_thread(_switch_mid_search, browser, two_collections)


def _switch_mid_search(driver: Any, url: str) -> None:
    _open(driver, url, [{"path": "/alpha:search", "body": "", "ms": 1500}])
    _choose(driver, "alpha")
    driver.find_element("id", "query").send_keys("a shape\n")
    _choose(driver, "beta")
    _settled(driver)
    calls = driver.execute_script("return window.__calls")
    # alpha's hits must not get beta's pictures (same ids, other images) ...
    assert not [c for c in calls if c.endswith("/beta/images:thumbnails")], calls
    # ... nor be shown while beta is the chosen collection.
    assert _shown_from(driver) <= {"beta"}


@pytest_asyncio.fixture
async def storeless(embedder_server: Any, tmp_path: Path) -> AsyncIterator[str]:
    """A service that keeps no thumbnails (SEARCH_IMAGE_STORE=off)."""
    server, stub, channel = await _serve(tmp_path, embedder_server.port, image_store="off")
    try:
        await _fill(stub, "alpha", seed=11)
        yield f"http://127.0.0.1:{server.http_port}/"
    finally:
        await channel.close()
        await server.stop(grace=0)


async def test_without_thumbnails_results_still_read_as_results(
        browser: Any, storeless: str) -> None:  # noqa: F811
    await asyncio.to_thread(_storeless, browser, storeless)


def _storeless(driver: Any, url: str) -> None:
    _open(driver, url)
    driver.find_element("id", "query").send_keys("a shape\n")
    wait(driver, lambda d: len(cards(d, "results")) == 12, "12 results")
    _settled(driver, 2)
    status = driver.find_element("id", "status")
    # The search worked: it is not reported as a failure, and no card waits forever on '…'.
    assert "12 results" in status.text and "error" not in status.get_attribute("class")
    assert [c.find_element("css selector", "figure > div, figure > img").text
            for c in cards(driver, "results")].count("…") == 0


@pytest_asyncio.fixture
async def small_limit(embedder_server: Any, tmp_path: Path) -> AsyncIterator[str]:
    """A service with a 1 MiB message limit; 'noise' holds 40 noisy images, whose thumbnails
    (about 50 KB each: noise does not compress) together pass that limit."""
    server, stub, channel = await _serve(tmp_path, embedder_server.port,
                                         max_message_bytes=1 << 20)
    try:
        await _fill(stub, "alpha", seed=11)
        await stub.CreateCollection(pb.CreateCollectionRequest(name="noise"))
        rng = random.Random(3)
        for start in range(0, 40, 4):
            await stub.AddImages(pb.AddImagesRequest(collection="noise", images=[
                pb.NewImage(id=f"n{i:02d}", data=encode(Image.frombytes(
                    "RGB", (256, 256), rng.randbytes(256 * 256 * 3))))
                for i in range(start, start + 4)]))
        yield f"http://127.0.0.1:{server.http_port}/"
    finally:
        await channel.close()
        await server.stop(grace=0)


async def test_an_image_over_the_message_limit_is_reported_as_too_large(
        browser: Any, small_limit: str, tmp_path: Path) -> None:  # noqa: F811
    noise = Image.frombytes("RGB", (1200, 1200), random.Random(1).randbytes(1200 * 1200 * 3))
    big = tmp_path / "big.png"
    noise.save(big)
    assert big.stat().st_size > 3 << 20
    await asyncio.to_thread(_too_large, browser, small_limit, big)


def _too_large(driver: Any, url: str, big: Path) -> None:
    _open(driver, url)
    driver.find_element("id", "search-image").send_keys(str(big))
    wait(driver, lambda d: "error" in d.find_element("id", "status").get_attribute("class"),
         "an error")
    assert "larger than the message limit" in driver.find_element("id", "status").text


async def test_thumbnails_over_the_message_limit_still_all_show(
        browser: Any, small_limit: str) -> None:  # noqa: F811
    await asyncio.to_thread(_many_large_thumbnails, browser, small_limit)


def _many_large_thumbnails(driver: Any, url: str) -> None:
    from selenium.webdriver.support.ui import Select
    _open(driver, url)
    _choose(driver, "noise")
    Select(driver.find_element("id", "top-k")).select_by_visible_text("64")
    driver.find_element("id", "query").send_keys("a shape\n")
    wait(driver, lambda d: len(cards(d, "results")) == 40, "40 results")
    wait(driver, lambda d: thumbnails_loaded(d, "results"), "all 40 thumbnails")


async def test_a_token_the_browser_cannot_send_is_explained(
        browser: Any, two_collections: str) -> None:  # noqa: F811
    await asyncio.to_thread(_odd_token, browser, two_collections)


def _odd_token(driver: Any, url: str) -> None:
    _open(driver, url)
    driver.find_element("id", "token").send_keys("tök€n", "\t")
    wait(driver, lambda d: "error" in d.find_element("id", "status").get_attribute("class"),
         "an error")
    text = driver.find_element("id", "status").text
    assert "token" in text.lower() and "ISO-8859-1" not in text, text


# --- behind a reverse proxy at a path prefix ------------------------------------------------

@pytest_asyncio.fixture
async def behind_prefix(two_collections: str) -> AsyncIterator[str]:
    """A reverse proxy at /imagesearch/ in front of the gateway, as nginx's
    `location /imagesearch/ { proxy_pass http://gateway/; }` does."""
    upstream = two_collections.rstrip("/")
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        path = request.raw_path
        if not path.startswith("/imagesearch/"):
            return web.Response(status=404, text="not behind the prefix")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with session.request(request.method, upstream + path[len("/imagesearch"):],
                                   headers=headers, data=await request.read()) as answer:
            return web.Response(status=answer.status, body=await answer.read(), headers={
                k: v for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/imagesearch/"
    finally:
        await runner.cleanup()
        await session.close()


async def test_the_page_works_behind_a_path_prefix(
        browser: Any, behind_prefix: str) -> None:  # noqa: F811
    await asyncio.to_thread(_prefixed, browser, behind_prefix)


def _prefixed(driver: Any, url: str) -> None:
    _open(driver, url)
    driver.find_element("id", "query").send_keys("a shape\n")
    wait(driver, lambda d: len(cards(d, "results")) == 12, "12 results")


# --- another web page in the same browser -------------------------------------------------

@pytest_asyncio.fixture
async def open_service(embedder_server: Any, tmp_path: Path
                       ) -> AsyncIterator[tuple[str, search_pb2_grpc.SearchServiceStub]]:
    """A service without tokens (as the demo runs), its URL and a stub."""
    server, stub, channel = await _serve(tmp_path, embedder_server.port)
    try:
        await _fill(stub, "alpha", seed=11)
        yield f"http://127.0.0.1:{server.http_port}", stub
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest.fixture
def evil_site(tmp_path: Path) -> Path:
    """A folder served as another origin (another loopback port)."""
    folder = tmp_path / "evil"
    folder.mkdir()
    return folder


async def test_another_origin_cannot_delete_images_through_the_browser(
        browser: Any, open_service: tuple[str, Any], evil_site: Path) -> None:  # noqa: F811
    url, stub = open_service
    # A text/plain POST is a "simple" request: no preflight, and the gateway reads any body
    # as JSON. The page cannot read the answer, but the call is made.
    target = f"{url}/v1/collections/alpha/images:delete"
    (evil_site / "index.html").write_text(
        f"<!doctype html><script>fetch('{target}', {{method: 'POST', mode: 'no-cors', "
        "headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({ids: ['img-000']})})"
        ".then(() => { document.title = 'sent'; }, () => { document.title = 'refused'; });"
        "</script>")
    app = web.Application()
    app.router.add_static("/", evil_site)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        evil = f"http://127.0.0.1:{runner.addresses[0][1]}/index.html"
        await asyncio.to_thread(browser.get, evil)
        await asyncio.to_thread(wait, browser, lambda d: d.title in ("sent", "refused"),
                                "the cross-origin call")
        answer = await stub.GetImages(pb.GetImagesRequest(collection="alpha", ids=["img-000"]))
        assert list(answer.missing_ids) == [], "another web page deleted an image"
    finally:
        await runner.cleanup()


async def test_cross_site_calls_are_refused_and_same_origin_ones_are_not(
        open_service: tuple[str, Any]) -> None:
    url, _ = open_service
    body = b'{"ids": ["img-001"]}'
    async with aiohttp.ClientSession() as session:
        for site in ("cross-site", "same-site"):
            async with session.post(f"{url}/v1/collections/alpha/images:delete", data=body,
                                    headers={"Sec-Fetch-Site": site,
                                             "Content-Type": "text/plain"}) as response:
                assert response.status == 403, await response.text()
        async with session.post(f"{url}/v1/collections/alpha/images:delete", data=body,
                                headers={"Origin": "http://evil.example"}) as response:
            assert response.status == 403, await response.text()
        # The page itself, curl (no Origin, no Sec-Fetch-Site) and a proxy's own origin pass.
        for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": "http://public.example"},
                        {}, {"Origin": url}):
            async with session.post(f"{url}/v1/collections/alpha/images:get", data=body,
                                    headers=headers) as response:
                assert response.status == 200, (headers, await response.text())
