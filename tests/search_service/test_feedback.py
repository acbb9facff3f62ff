"""Relevance feedback as data, on the in-memory fakes: what a judgement keeps, every refusal,
the bound, pages, the three deletions, and the feedback that goes with its images and its
collection - including images whose ids are prefixes of each other."""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch.errors import InvalidArgument, NotFound, ResourceExhausted
from search_service import feedback, feedback_space
from search_service import validation as check
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import Feedback, NewImage, Part, Query
from search_service.errors import CollectionNotFound
from tests.search_service.fakes import FakeEmbedder, FakeStore, unit

# Ids that are prefixes of one another, or share one up to a character below '/'.
IDS = ["a", "a b", "a-", "a0", "ab", "b", "x"]


@pytest.fixture
async def parts() -> tuple[SearchApp, FakeStore]:
    store = FakeStore()
    app = SearchApp(SearchCore(store, FakeEmbedder()))
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage(i, i.encode(), {}) for i in IDS])
    return app, store


async def listed(app: SearchApp, vectors: bool = False, size: int = 1000) -> list:
    page, _ = await app.list_feedback("c", size, "", vectors)
    return page


async def test_a_judgement_keeps_the_query_vector_its_description_and_the_verdict(parts):
    app, _ = parts
    ids, held = await app.record_feedback("c", Query(text="a beach"), ["a"], ["b"])
    assert held == 2 and [feedback_space.image_of(i) for i in ids] == ["a", "b"]
    first, second = await listed(app, vectors=True)
    assert (first.id, first.image_id, first.relevant, first.query_kind,
            first.query_description) == (ids[0], "a", True, "text", "a beach")
    assert (second.image_id, second.relevant) == ("b", False)
    np.testing.assert_allclose(first.query_vector, unit("text:a beach"), atol=1e-6)
    assert first.recorded_at_ms > 0
    assert (await listed(app))[0].query_vector is None


async def test_judging_again_replaces_and_flips_the_verdict_without_counting_twice(parts):
    app, _ = parts
    first, _ = await app.record_feedback("c", Query(image_id="x"), ["a"], [])
    again, held = await app.record_feedback("c", Query(image_id="x"), [], ["a"])
    assert again == first and held == 1
    (only,) = await listed(app)
    assert (only.relevant, only.query_kind, only.query_description) == (False, "image_id", "x")


async def test_compound_and_image_queries_are_described(parts):
    app, _ = parts
    compound = Query(parts=(Part(Query(text="a beach")), Part(Query(image=b"p"), -0.5)))
    await app.record_feedback("c", compound, ["a"], [])
    await app.record_feedback("c", Query(image=b"q"), ["b"], [])
    described = {r.image_id: (r.query_kind, r.query_description) for r in await listed(app)}
    assert described == {"a": ("compound", "1*text:a beach + -0.5*image:"), "b": ("image", "")}


@pytest.mark.parametrize(("relevant", "not_relevant", "query", "error", "message"), [
    ([], [], Query(text="t"), InvalidArgument, "request has no judged image ids; send 1 to 1000"),
    (["a"], ["a"], Query(text="t"), InvalidArgument,
     "images 'a' are judged more than once: give each image once, relevant or not"),
    (["a/b"], [], Query(text="t"), InvalidArgument, "external id 'a/b' is invalid: use 1-256 "
     "characters, no '/' and no control characters"),
    (["a"], [], Query(text="t", feedback=Feedback(("b",))), InvalidArgument,
     "record the query itself, not one refined by feedback"),
    (["a"], [], Query(), InvalidArgument,
     "query: query is empty: set text, image, image_id, vector or compound"),
    (["a"], [], Query(image_id="gone"), NotFound,
     "query: image 'gone' is not in collection 'c'"),
    (["a", "gone", "nope"], [], Query(text="t"), NotFound,
     "images 'gone', 'nope' are not in collection 'c': nothing was recorded"),
])
async def test_bad_judgements_are_refused_whole(parts, relevant, not_relevant, query, error,
                                                message):
    app, _ = parts
    with pytest.raises(error) as caught:
        await app.record_feedback("c", query, relevant, not_relevant)
    assert str(caught.value) == message
    assert await listed(app) == []


async def test_too_many_ids_and_an_unknown_collection_are_refused(parts):
    app, _ = parts
    with pytest.raises(InvalidArgument, match="request has 1001 judged image ids; the limit"):
        await app.record_feedback("c", Query(text="t"), [f"i{n}" for n in range(1001)], [])
    with pytest.raises(CollectionNotFound):
        await app.record_feedback("nope", Query(text="t"), ["a"], [])
    with pytest.raises(CollectionNotFound):
        await app.list_feedback("nope", 0, "", False)
    with pytest.raises(CollectionNotFound):
        await app.delete_feedback("nope", [], [], True)


async def test_the_bound_refuses_the_whole_call_but_not_judgements_made_again(parts,
                                                                               monkeypatch):
    app, _ = parts
    monkeypatch.setattr(check, "MAX_FEEDBACK", 2)
    await app.record_feedback("c", Query(text="t"), ["a", "b"], [])
    with pytest.raises(ResourceExhausted) as caught:
        await app.record_feedback("c", Query(text="u"), ["a"], ["x"])
    assert str(caught.value) == ("collection 'c' holds 2 feedback judgements; 2 more would pass "
                                 "the limit of 2: delete some first")
    assert (await app.record_feedback("c", Query(text="t"), [], ["a", "b"]))[1] == 2
    assert len(await listed(app)) == 2


async def test_feedback_lists_in_pages_grouped_by_image(parts):
    app, _ = parts
    for text in ("one", "two", "three"):
        await app.record_feedback("c", Query(text=text), IDS, [])
    seen, token = [], ""
    while True:
        page, token = await app.list_feedback("c", 4, token, False)
        seen += page
        if not token:
            break
    assert len(seen) == 3 * len(IDS) == len({r.id for r in seen})
    images = [r.image_id for r in seen]
    runs = [i for n, i in enumerate(images) if n == 0 or images[n - 1] != i]
    assert sorted(runs) == sorted(IDS)  # each image's judgements together


async def test_delete_by_id_by_image_and_all(parts):
    app, _ = parts
    ids, _ = await app.record_feedback("c", Query(text="t"), IDS, [])
    await app.delete_feedback("c", [ids[0], "x/" + "0" * 32], [], False)
    assert "a" not in {r.image_id for r in await listed(app)}
    await app.delete_feedback("c", [], ["a b", "never"], False)
    assert {r.image_id for r in await listed(app)} == set(IDS) - {"a", "a b"}
    await app.delete_feedback("c", [], [], True)
    assert await listed(app) == []


@pytest.mark.parametrize(("ids", "image_ids", "everything", "message"), [
    ([], [], False, "give exactly one of ids, image_ids and all"),
    (["a/" + "0" * 32], ["a"], False, "give exactly one of ids, image_ids and all"),
    ([], ["a"], True, "give exactly one of ids, image_ids and all"),
    (["a"], [], False, "feedback id 'a' is invalid: pass a FeedbackRecord.id unchanged"),
    (["a/short"], [], False, "feedback id 'a/short' is invalid: pass a FeedbackRecord.id "
     "unchanged"),
])
async def test_bad_deletions_are_refused(parts, ids, image_ids, everything, message):
    app, _ = parts
    with pytest.raises(InvalidArgument) as caught:
        await app.delete_feedback("c", ids, image_ids, everything)
    assert str(caught.value) == message


@pytest.mark.parametrize("page", [1, 2, 1000])  # per-image runs over pages, and one pass
async def test_deleting_images_deletes_the_feedback_naming_them_and_no_other(parts,
                                                                              monkeypatch,
                                                                              page):
    app, _ = parts
    monkeypatch.setattr(check, "MAX_PAGE", page)
    for text in ("one", "two", "three"):
        await app.record_feedback("c", Query(text=text), IDS[:4], IDS[4:])
    await app.delete_images("c", ["a", "b"])
    left = sorted(r.image_id for r in await listed(app))
    assert left == sorted([i for i in IDS if i not in ("a", "b")] * 3)


async def test_feedback_goes_with_its_collection(parts):
    app, store = parts
    await app.record_feedback("c", Query(text="t"), ["a"], [])
    await app.delete_collection("c")
    await app.create_collection("c", "")
    assert await listed(app) == []
    assert await feedback.count(app.core, store.records["c"]) == 0


async def test_a_collection_without_feedback_reads_no_feedback_to_delete_images(parts,
                                                                              monkeypatch):
    app, store = parts
    listing = []
    real = store.list_images

    async def spied(*args, **kwargs):
        listing.append(args[0].model)
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "list_images", spied)
    await app.delete_images("c", ["a"])
    assert listing == []
