"""The search core and its analyses against in-memory fakes of their ports: fast, no network.
The same behaviour runs against real Milvus and the real embedder in the e2e suites."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from imagesearch.errors import InvalidArgument, NotFound
from search_service import validation as check
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import (
    Condition,
    DuplicateMode,
    ModelSpace,
    NewImage,
    Op,
    Problem,
    Query,
)
from search_service.errors import (
    CollectionExists,
    CollectionNotFound,
    EmbedderUnavailable,
    InvalidFilter,
    ModelMismatch,
)
from tests.search_service.fakes import DIMENSION, FakeEmbedder, FakeStore, unit


@pytest.fixture
def parts() -> tuple[SearchApp, FakeStore, FakeEmbedder]:
    store, embedder = FakeStore(), FakeEmbedder()
    return SearchApp(SearchCore(store, embedder)), store, embedder


def images(*ids: str, label: str | None = None) -> list[NewImage]:
    return [NewImage(i, i.encode(), {"label": label} if label else {}) for i in ids]


async def test_a_collection_records_the_model_it_was_made_with(parts):
    app, _, _ = parts
    made = await app.create_collection("cats", "mine")
    assert (made.record.model.fingerprint, made.image_count) == (FakeEmbedder().serving
                                                                  .fingerprint, 0)
    with pytest.raises(CollectionExists):
        await app.create_collection("cats", "")


async def test_bad_items_fail_alone_and_the_rest_are_stored(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    outcomes = await app.add_images("c", [
        NewImage("ok", b"pixels", {}), NewImage("bad/id", b"pixels", {}),
        NewImage("broken", b"bad bytes", {}), NewImage("nan", b"x", {"v": float("nan")}),
        NewImage("ok", b"again", {})])
    assert [o.problem for o in outcomes] == [None, Problem.INVALID_ARGUMENT,
                                             Problem.INVALID_ARGUMENT,
                                             Problem.INVALID_ARGUMENT, Problem.INVALID_ARGUMENT]
    assert "appears more than once" in outcomes[4].message
    assert (await app.get_collection("c")).image_count == 1


async def test_cheap_checks_come_before_any_store_or_embedder_call(parts):
    app, store, embedder = parts
    await app.create_collection("c", "")
    store.calls.clear()
    with pytest.raises(InvalidArgument, match="request has 257 images; the limit is 256"):
        await app.add_images("c", images(*(f"i{n}" for n in range(257))))
    with pytest.raises(InvalidFilter, match="ranges compare numbers only"):
        await app.search("c", [Query(text="cat")], 5, -1.0,
                         [Condition("label", Op.GT, ("x",))])
    with pytest.raises(InvalidArgument, match="top_k must be 0 to 1000"):
        await app.search("c", [Query(text="cat")], 1001, -1.0, [])
    assert store.calls == [] and embedder.calls == []


async def test_a_bad_filter_is_reported_even_when_every_query_fails_to_embed(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    with pytest.raises(InvalidArgument, match="metadata key '1bad key' is invalid"):
        await app.search("c", [Query(image=b"bad image")], 5, -1.0,
                         [Condition("1bad key", Op.EQ, (1,))])


async def test_all_queries_of_a_call_go_to_the_store_in_one_search(parts):
    app, store, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", images("a", "b", "c"))
    store.calls.clear()
    results = await app.search("c", [Query(text="x"), Query(image_id="a"), Query(image_id="zz"),
                                     Query(image_id="a/b"), Query(vector=np.ones(3)),
                                     Query(vector=unit("v"))], 2, -1.0, [])
    assert [r.outcome.problem for r in results] == [
        None, None, Problem.NOT_FOUND, Problem.INVALID_ARGUMENT, Problem.INVALID_ARGUMENT, None]
    assert results[1].hits[0].external_id == "a"
    assert f"search:{3}" in store.calls and sum(c.startswith("search") for c in store.calls) == 1


@pytest.mark.parametrize("older_embedder", [False, True])
async def test_a_collection_of_another_model_is_never_written_or_searched(parts,
                                                                          older_embedder):
    # A current embedder refuses the model the call names; an older one ignores the name and
    # answers with its own model, which the fingerprint check catches.
    app, store, embedder = parts
    await app.create_collection("c", "")
    embedder.serving = ModelSpace("sha256:" + "00" * 32, DIMENSION, "other")
    embedder.ignores_names = older_embedder
    with pytest.raises(ModelMismatch, match=r"uses model fake-model .*StartMigration"):
        await app.add_images("c", images("a"))
    with pytest.raises(ModelMismatch):
        await app.search("c", [Query(text="x")], 1, -1.0, [])
    with pytest.raises(ModelMismatch):
        await app.search("c", [Query(image=b"img")], 1, -1.0, [])
    assert "upsert" not in store.calls


async def test_listing_counts_the_whole_page_in_one_call_and_hides_what_it_must(parts):
    app, store, _ = parts
    for name in ("a1", "a2", "b1", "b2", "b3", "c1", "c2", "c3", "c4"):
        await app.create_collection(name, "")
    store.calls.clear()
    page, token = await app.list_collections(2, "", visible=lambda n: n.startswith("b"))
    assert [c.record.name for c in page] == ["b1", "b2"]
    assert store.calls == ["counts:2"]
    page, token = await app.list_collections(2, token, visible=lambda n: n.startswith("b"))
    assert [c.record.name for c in page] == ["b3"] and token == ""


@pytest.mark.parametrize("size", [1, 2, 3, 10])
async def test_page_tokens_and_sizes_reveal_nothing_of_hidden_collections(parts, size):
    """Found from outside: pages came back short and their tokens named hidden collections."""
    app, _, _ = parts
    hidden = ["aaa-hidden", "lab", "secret", "zzz-hidden"]
    for name in [*hidden, "shop-eu", "shop-us"]:
        await app.create_collection(name, "")
    shown, token, pages = [], "", 0
    while True:
        page, token = await app.list_collections(size, token, lambda n: n.startswith("shop"))
        shown += [c.record.name for c in page]
        pages += 1
        if not token:
            break
        assert check.decode_token(token) in ("shop-eu", "shop-us")
        assert len(page) == size
    assert shown == ["shop-eu", "shop-us"]
    assert pages == (2 + size - 1) // size + (2 % size == 0)


async def test_duplicates_leave_the_query_image_out_and_unknown_ids_are_not_found(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", images("a", "b"))
    hits = (await app.find_duplicates("c", Query(image_id="a"), -0.99, 5)).hits
    assert "a" not in [h.external_id for h in hits]
    with pytest.raises(NotFound, match="image 'zz' is not in collection 'c'"):
        await app.find_duplicates("c", Query(image_id="zz"), 0.9, 5)
    with pytest.raises(InvalidArgument, match="min_similarity must be in"):
        await app.find_duplicates("c", Query(image_id="a"), float("nan"), 5)


async def test_groups_join_chains_of_neighbours(parts):
    app, store, _ = parts
    await app.create_collection("c", "")
    base = unit("base")
    record = store.records["c"]
    near = [base + 0.01 * unit(str(n)) for n in range(3)]
    await store.upsert(record, ["x", "y", "z", "far"],
                       np.stack([v / np.linalg.norm(v) for v in near] + [unit("far")]),
                       [{}] * 4)
    found = await app.duplicate_groups("c", 0.99, 2)
    assert (found.scanned, found.mode) == (4, DuplicateMode.SIMILAR)  # no image store here
    assert [g.ids for g in found.groups] == [["x", "y", "z"]]


async def test_classify_votes_by_labelled_neighbours_and_never_for_itself(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", images("cat1", "cat2", label="cat") + images("dog1", label="dog")
                         + images("unlabelled"))
    (result,) = await app.classify("c", [Query(image_id="cat1")], "label", 2, 0)
    assert sum(s.votes for s in result.labels) == 2
    with pytest.raises(InvalidArgument, match="max_labels must be 0"):
        await app.classify("c", [Query(image_id="cat1")], "label", 2, -1)


async def test_writes_reread_the_collection_and_reads_reuse_it_for_a_moment(parts):
    app, store, _ = parts
    await app.create_collection("c", "")
    store.calls.clear()
    await app.search("c", [Query(text="x")], 1, -1.0, [])
    await app.search("c", [Query(text="x")], 1, -1.0, [])
    await app.add_images("c", images("a"))
    await app.add_images("c", images("b"))
    assert store.calls.count("get_collection") == 3


async def test_a_deleted_collection_is_not_found_for_every_call(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    await app.delete_collection("c")
    for call in (app.get_collection("c"), app.add_images("c", images("a")),
                 app.get_images("c", ["a"], False), app.delete_images("c", ["a"])):
        with pytest.raises(CollectionNotFound):
            await call


async def test_an_unavailable_embedder_fails_the_call_and_stores_nothing(parts):
    app, store, embedder = parts
    await app.create_collection("c", "")
    embedder.down = True
    with pytest.raises(EmbedderUnavailable):
        await app.add_images("c", images("a"))
    assert "upsert" not in store.calls


async def test_a_read_in_flight_during_a_delete_cannot_cache_the_old_collection(parts):
    """Found from outside: a search begun before DeleteCollection put the old record back into
    the cache, so searches of the collection created again missed its images for 2 s."""
    app, store, _ = parts
    await app.create_collection("race", "")
    started, release = asyncio.Event(), asyncio.Event()
    real_get = store.get_collection

    async def slow_get(name):
        record = await real_get(name)
        started.set()
        await release.wait()
        return record

    store.get_collection = slow_get
    reading = asyncio.ensure_future(app.core.collection("race"))
    await started.wait()
    store.get_collection = real_get
    await app.delete_collection("race")
    await app.create_collection("race", "")
    await app.add_images("race", images("new"))
    release.set()
    await reading
    (result,) = await app.search("race", [Query(image_id="new")], 1, -1.0, [])
    assert result.outcome.ok and result.hits[0].external_id == "new"


@pytest.mark.parametrize("values", [[3e38] + [0.0] * 7, [1e-30] * 8, [-2.0] * 8])
async def test_any_finite_non_zero_vector_is_normalised(parts, values):
    """Found from outside: the float32 norm overflowed or underflowed and valid vectors were
    refused."""
    app, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", images("a"))
    (result,) = await app.search("c", [Query(vector=np.asarray(values, dtype=np.float32))], 1,
                                 -1.0, [])
    assert result.outcome.ok, result.outcome.message
    assert len(result.hits) == 1
