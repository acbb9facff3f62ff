"""The search page, in a real browser: headless Chromium from Debian's packages (chromium,
chromium-driver), driven by Selenium, against the real services (Milvus Lite, the bundled
model). What a user does: pick a collection, search by text and by a picked image, look at
duplicate groups and a classification - and what an attacker stores (markup in ids and
metadata) stays text.

Set IMAGESEARCH_WEB_SCREENSHOT=<file.png> to save the README's screenshot on the way."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.server import SearchServer
from tests.conftest import encode
from tests.search_fixtures import labels, scene_images, search_settings

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOSTILE_ID = "<img src=x onerror=window.pwned=1>"
HOSTILE_NOTE = "<script>window.pwned=2</script>"
TOKEN = "page-token"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("IMAGESEARCH_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromium-driver are required (apt-get install chromium "
                        "chromium-driver)")
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Root in a container has no sandbox; nothing but the page on loopback is opened.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-domain-reliability",
                 "--disable-client-side-phishing-detection", "--no-proxy-server"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest_asyncio.fixture
async def page(embedder_server: Any, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A service with a token, its HTTP port and a collection of shapes with a duplicate and
    a hostile entry; yields the page's URL and a folder of the images as files."""
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0, auth_tokens=TOKEN))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        auth = (("authorization", f"Bearer {TOKEN}"),)
        await stub.CreateCollection(pb.CreateCollectionRequest(name="shapes"), metadata=auth)
        items = scene_images(24, seed=11)
        files = tmp_path / "files"
        files.mkdir()
        images = [pb.NewImage(id=i, data=d, metadata=labels(s)) for i, d, s in items]
        images.append(pb.NewImage(id="copy-of-img-000", data=items[0][1]))
        red_circle = synthetic.Scene("red", "circle", 1, "large", "center", "white")
        images.append(pb.NewImage(id="red-circle", metadata=labels(red_circle), data=encode(
            synthetic.render(red_circle, 96, random.Random(5)))))
        hostile = scene_images(25, seed=12)[24][1]
        images.append(pb.NewImage(id=HOSTILE_ID, data=hostile, metadata={
            "note": pb.MetadataValue(string_value=HOSTILE_NOTE)}))
        answer = await stub.AddImages(pb.AddImagesRequest(collection="shapes", images=images),
                                      metadata=auth)
        assert all(r.code == 0 for r in answer.results)
        for image_id, data, _ in items:
            (files / f"{image_id}.png").write_bytes(data)
        (files / "hostile.png").write_bytes(hostile)
        yield f"http://127.0.0.1:{server.http_port}/", files
    finally:
        await channel.close()
        await server.stop(grace=0)


def wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 30) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        # A card found just before the page replaced it is stale: look again, do not fail.
        return WebDriverWait(driver, timeout, ignored_exceptions=(
            StaleElementReferenceException,)).until(condition)
    except Exception as err:
        status = driver.find_element("id", "status").text
        raise AssertionError(f"waited {timeout} s for {what}; the page says {status!r}") from err


def cards(driver: Any, container: str) -> list[Any]:
    return driver.find_elements("css selector", f"#{container} .card")


def thumbnails_loaded(driver: Any, container: str) -> bool:
    """Every card shows a decoded picture (a broken data: URL has naturalWidth 0)."""
    return bool(driver.execute_script(
        "const cards = [...document.querySelectorAll(arguments[0] + ' .card')];"
        "return cards.length > 0 && cards.every(c => { const i = c.querySelector('img');"
        " return i && i.complete && i.naturalWidth > 0; });", f"#{container}"))


async def test_the_page_shows_searches_duplicates_and_labels_as_pictures(
        browser: Any, page: tuple[str, Path]) -> None:
    await asyncio.to_thread(_browse, browser, *page)


def _browse(driver: Any, url: str, files: Path) -> None:
    driver.get(url)
    # Without a token the service answers 401, and the page says what to do.
    wait(driver, lambda d: "token" in d.find_element("id", "status").text, "a token request")
    driver.find_element("id", "token").send_keys(TOKEN, "\t")
    wait(driver, lambda d: "27 images" in d.find_element("id", "collection-info").text,
         "the collection to load")

    driver.find_element("id", "query").send_keys("a red circle\n")
    wait(driver, lambda d: len(cards(d, "results")) == 16, "16 results")
    wait(driver, lambda d: thumbnails_loaded(d, "results"), "the results' thumbnails")
    assert "similarity 0." in cards(driver, "results")[0].text
    assert "red-circle" in [c.get_attribute("data-id") for c in cards(driver, "results")[:3]]
    if os.environ.get("IMAGESEARCH_WEB_SCREENSHOT"):
        driver.save_screenshot(os.environ["IMAGESEARCH_WEB_SCREENSHOT"])

    driver.find_element("id", "search-image").send_keys(str(files / "img-005.png"))
    wait(driver, lambda d: cards(d, "results")[0].get_attribute("data-id") == "img-005",
         "the picked image to come first")

    # Markup an attacker stored is shown as text and never runs.
    driver.find_element("id", "search-image").send_keys(str(files / "hostile.png"))
    wait(driver, lambda d: cards(d, "results")[0].get_attribute("data-id") == HOSTILE_ID,
         "the hostile image to come first")
    first = cards(driver, "results")[0]
    assert HOSTILE_ID in first.text and HOSTILE_NOTE in first.text
    assert driver.execute_script("return window.pwned === undefined")

    driver.find_element("css selector", "[data-tab=duplicates]").click()
    driver.find_element("css selector", "#groups-form button").click()
    wait(driver, lambda d: d.find_elements("css selector", "#groups .group"), "a group")
    groups = [{c.get_attribute("data-id") for c in g.find_elements("css selector", ".card")}
              for g in driver.find_elements("css selector", "#groups .group")]
    assert {"img-000", "copy-of-img-000"} in groups
    wait(driver, lambda d: thumbnails_loaded(d, "groups"), "the groups' thumbnails")

    driver.find_element("css selector", "[data-tab=classify]").click()
    key = driver.find_element("id", "label-key")
    key.clear()
    key.send_keys("shape")
    driver.find_element("id", "classify-image").send_keys(str(files / "img-007.png"))
    shape = scene_images(24, seed=11)[7][2].shape
    wait(driver, lambda d: d.find_elements("css selector", "#classification td.label"),
         "a classification")
    assert driver.find_elements("css selector", "#classification td.label")[0].text == shape

    # Nothing the page did was refused by its own Content-Security-Policy or failed silently.
    severe = [entry["message"] for entry in driver.get_log("browser")
              if entry["level"] == "SEVERE" and "401" not in entry["message"]]
    assert severe == []


async def test_the_page_is_served_with_headers_that_keep_it_to_its_origin(
        page: tuple[str, Path]) -> None:
    url, _ = page
    async with aiohttp.ClientSession() as session:
        for path, content_type in (("", "text/html"), ("web/app.js", "text/javascript"),
                                   ("web/app.css", "text/css")):
            async with session.get(url + path) as response:
                assert response.status == 200 and response.content_type == content_type
                policy = response.headers["Content-Security-Policy"]
                assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
                assert response.headers["X-Content-Type-Options"] == "nosniff"
        async with session.get(url + "web/../pyproject.toml") as response:
            assert response.status == 404
        async with session.get(url + "v1/collections") as response:  # the API keeps its token
            assert response.status == 401
