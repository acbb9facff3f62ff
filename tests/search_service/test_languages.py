"""Queries in other languages: Query.language picks the embedder's text tower, per query and
per text part, and a language no tower serves fails its own query only. Against fakes of the
ports here, and through the real services and the bundled model's multilingual tower."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from imagesearch import cli
from imagesearch.search.v1 import search_pb2 as pb
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import NewImage, Part, Problem, Query
from tests.search_fixtures import add, scene_images
from tests.search_service.fakes import FakeEmbedder, FakeStore


@pytest.fixture
async def app() -> tuple[SearchApp, FakeEmbedder]:
    store, embedder = FakeStore(), FakeEmbedder()
    app = SearchApp(SearchCore(store, embedder))
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage(f"i{n}", f"i{n}".encode(), {}) for n in range(8)])
    return app, embedder


async def test_an_unserved_language_fails_its_own_queries_and_no_other(app):
    app, _ = app
    results = await app.search("c", [Query(text="a", language="xx"), Query(text="b"),
                                     Query(text="c", language="en")], 3, -1.0, [])
    assert [r.outcome.problem for r in results] == [Problem.INVALID_ARGUMENT, None, None]
    assert "no text tower serves language 'xx'" in results[0].outcome.message
    assert [len(r.hits) for r in results] == [0, 3, 3]
    assert [r.text_towers for r in results] == [(), ("default",), ("default",)]


@pytest.mark.parametrize(("query", "message"), [
    (Query(image_id="i1", language="de"), "language is for text"),
    (Query(text="x", language="not a tag!"), "is not a BCP 47 tag"),
    (Query(text="x", language="x" * 36), "is not a BCP 47 tag"),
    (Query(parts=(Part(Query(text="x")),), language="de"), "language is for text"),
    (Query(parts=(Part(Query(text="x", language="de--")),)), "part 1: language"),
    (Query(parts=(Part(Query(image_id="i2", language="de")),)), "part 1: language is for"),
])
async def test_a_language_where_it_means_nothing_or_malformed_is_refused(app, query, message):
    app, embedder = app
    (result,) = await app.search("c", [query], 3, -1.0, [])
    assert result.outcome.problem == Problem.INVALID_ARGUMENT
    assert message in result.outcome.message
    assert ("texts", 1) not in embedder.calls


async def test_text_parts_in_other_languages_report_their_towers_in_order(app):
    app, embedder = app
    query = Query(parts=(Part(Query(text="a", language="en")), Part(Query(image_id="i1")),
                         Part(Query(text="b", language="auto"))))
    (result,) = await app.search("c", [query], 3, -1.0, [])
    assert result.outcome.problem is None and result.text_towers == ("default", "default")
    # One embedder call per language, not per text.
    assert embedder.calls.count(("texts", 1)) == 2


# Through the services: the bundled model's multilingual tower (de, fr, es, ru, zh, ar).

async def test_a_german_query_finds_what_its_english_one_finds(search):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="sprachen"))
    items = scene_images(60, seed=41)
    await add(stub, "sprachen", items)
    english, german, unknown = await _search(stub, [
        pb.Query(text="a red circle"), pb.Query(text="ein roter Kreis", language="de"),
        pb.Query(text="a red circle", language="tlh")])
    assert english.text_towers == ["default"]
    assert len(german.text_towers) == 1 and german.text_towers[0] != "default"
    top = {h.id for h in english.hits[:5]}
    assert len(top & {h.id for h in german.hits[:5]}) >= 3
    assert unknown.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "no text tower serves language 'tlh'" in unknown.status.message
    assert not unknown.hits
    (auto,) = await _search(stub, [pb.Query(text="красный круг", language="auto")])
    assert auto.text_towers == german.text_towers  # Cyrillic: the multilingual tower


async def _search(stub, queries: list[pb.Query]) -> list[pb.QueryResult]:
    response = await stub.Search(pb.SearchRequest(collection="sprachen", queries=queries,
                                                  top_k=10))
    return list(response.results)


async def test_the_cli_searches_in_a_language(search, capsys):
    server, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="cli-sprachen"))
    await add(stub, "cli-sprachen", scene_images(30, seed=42))

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["--server", f"127.0.0.1:{server.port}", "--json", "search",
                         "-c", "cli-sprachen", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await asyncio.to_thread(run, "un cercle rouge", "--language", "fr",
                                           "--minus", "bleu")
    assert code == 0 and len(json.loads(out)) == 10
    code, _, err = await asyncio.to_thread(run, "a circle", "--language", "tlh")
    assert code == 2 and "no text tower serves language 'tlh'" in err
