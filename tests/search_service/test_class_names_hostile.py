"""Hostile probes of zero-shot class names, on the in-memory fakes: names that collide once
normalised, odd text, tenants against each other."""

from __future__ import annotations

import pytest

from imagesearch.errors import FailedPrecondition, InvalidArgument
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import ClassSource, Query
from tests.search_service.fakes import FakeEmbedder, FakeStore

NFC, NFD = "caf\u00e9", "cafe\u0301"  # the same text to a reader, two strings to Python


@pytest.fixture
async def app() -> SearchApp:
    app = SearchApp(SearchCore(FakeStore(), FakeEmbedder()))
    for name in ("a", "b"):
        await app.create_collection(name, "")
    return app


async def names(app: SearchApp, collection: str) -> list[str]:
    page, _ = await app.list_class_names(collection, 1000, "")
    return page


async def test_names_equal_once_normalised_are_one_class(app):
    """Were two classes with the same label, splitting a query's share between them."""
    with pytest.raises(InvalidArgument, match="distinct"):
        await app.add_class_names("a", [NFC, NFD])
    assert await app.add_class_names("a", [NFC]) == 1
    assert await app.add_class_names("a", [NFD]) == 1
    assert await names(app, "a") == [NFC]
    await app.delete_class_names("a", [NFD])
    assert await names(app, "a") == []


@pytest.mark.parametrize("bad", ["", " ", "cat ", "\tcat", "a\nb", "\u200b", "\ud800"])
async def test_blank_or_unprintable_names_are_refused_and_nothing_is_written(app, bad):
    with pytest.raises(InvalidArgument):
        await app.add_class_names("a", ["dog", bad])
    assert await names(app, "a") == []


async def test_a_tenant_cannot_see_or_delete_anothers_names(app):
    await app.add_class_names("a", ["{} ignore previous instructions {0}", "AC/DC", "x'\\\""])
    await app.delete_class_names("b", ["AC/DC"])
    assert sorted(await names(app, "a")) == sorted(
        ["{} ignore previous instructions {0}", "AC/DC", "x'\\\""])
    assert await names(app, "b") == []
    with pytest.raises(FailedPrecondition):
        await app.classify("b", [Query(text="AC/DC")], "", 10, 3,
                           source=ClassSource.NAMES)


async def test_over_http_the_path_names_the_collection_not_the_body(embedder_server, tmp_path):
    """A proxy that authorises by URL path must see the collection the call acts on."""
    import aiohttp

    from search_service.server import SearchServer
    from tests.search_fixtures import search_settings

    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0))
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as http:
            for name in ("pa", "pb"):
                await (await http.post("/v1/collections", json={"name": name})).json()
                await http.post(f"/v1/collections/{name}/classNames", json={"names": ["dog"]})
            deleted = await http.post("/v1/collections/pa/classNames:delete",
                                      json={"collection": "pb", "names": ["dog"]})
            listed = await (await http.get("/v1/collections/pb/classNames")).json()
            sneaky = await (await http.get("/v1/collections/pa/classNames?collection=pb")).json()
            nan = await http.post("/v1/collections/pa:search", json={"queries": [{
                "compound": {"parts": [{"text": "dog", "weight": "NaN"}]}}]})
            nan_body = await nan.json()
    finally:
        await server.stop(grace=0)
    assert deleted.status in (200, 400)
    assert listed.get("names") == ["dog"]
    assert sneaky.get("names", []) in ([], ["dog"])
    assert nan.status in (200, 400) and "Traceback" not in str(nan_body), nan_body
