"""Compound queries and relevance feedback against fakes of the ports: the math held to numpy
by hypothesis, every refusal, the batching of embedder and store calls, and the exclusions.
The same behaviour runs on real Milvus and the real embedder in test_compose_e2e."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from imagesearch.errors import InvalidArgument
from search_service import compose
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import (
    DuplicateMode,
    Feedback,
    NewImage,
    Outcome,
    Part,
    Problem,
    Query,
)
from tests.search_service.fakes import DIMENSION, FakeEmbedder, FakeStore, unit

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
weights = st.floats(-100, 100, allow_nan=False, width=32).filter(lambda w: w != 0)
raw_vectors = st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=DIMENSION,
                       max_size=DIMENSION).map(lambda v: np.asarray(v, dtype=np.float32))


@pytest.fixture
async def app() -> tuple[SearchApp, FakeStore, FakeEmbedder]:
    store, embedder = FakeStore(), FakeEmbedder()
    app = SearchApp(SearchCore(store, embedder))
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage(f"i{n}", f"i{n}".encode(), {"label": f"l{n % 3}"})
                               for n in range(20)])
    return app, store, embedder


def fold(query: Query, atoms: list[np.ndarray | Outcome]) -> np.ndarray | Outcome:
    plan = compose.plan(query)
    assert isinstance(plan, compose.Plan), plan
    return plan.fold(atoms, "c")


def expected_sum(vectors: list[np.ndarray], ws: list[float]) -> np.ndarray | None:
    total = sum(float(w) * v.astype(np.float64) for w, v in zip(ws, vectors, strict=True))
    length = float(np.linalg.norm(total))
    return None if length < 0.01 * sum(abs(w) for w in ws) or length == 0 else total / length


@PROPERTY
@given(st.lists(st.tuples(raw_vectors, weights), min_size=1, max_size=16))
def test_a_compound_query_is_the_normalised_weighted_sum_of_its_normalised_parts(parts):
    units = [v / np.linalg.norm(v) for v, _ in parts if np.linalg.norm(v) > 0]
    assume(len(units) == len(parts))
    ws = [float(w) for _, w in parts]
    query = Query(parts=tuple(Part(Query(vector=v), w) for (v, _), w in
                              zip(parts, ws, strict=True)))
    got = fold(query, units)
    wanted = expected_sum(units, ws)
    if wanted is None:
        assert isinstance(got, Outcome) and got.problem is Problem.INVALID_ARGUMENT
        assert got.message.startswith("the parts cancel out: their weighted sum has length")
    else:
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(got, wanted, atol=1e-5)


@PROPERTY
@given(st.lists(st.tuples(raw_vectors, weights), min_size=1, max_size=8),
       st.floats(0.01, 1.0))
def test_only_the_ratios_of_the_weights_matter(parts, scale):
    units = [v / np.linalg.norm(v) for v, _ in parts if np.linalg.norm(v) > 0]
    assume(len(units) == len(parts))
    one = fold(Query(parts=tuple(Part(Query(vector=v), w) for v, w in parts)), units)
    scaled = fold(Query(parts=tuple(Part(Query(vector=v), w * scale) for v, w in parts)),
                  units)
    assume(not isinstance(one, Outcome) and not isinstance(scaled, Outcome))
    assert np.allclose(one, scaled, atol=1e-5)


@PROPERTY
@given(raw_vectors, st.lists(raw_vectors, max_size=5), st.lists(raw_vectors, max_size=5),
       st.tuples(*[st.floats(0, 10, width=32)] * 3))
def test_feedback_is_rocchio_on_unit_vectors(query, positives, negatives, abc):
    vectors = [query, *positives, *negatives]
    assume(all(np.linalg.norm(v) > 0 for v in vectors))
    q, *rest = [v / np.linalg.norm(v) for v in vectors]
    pos, neg = rest[:len(positives)], rest[len(positives):]
    a, b, c = (float(x) for x in abc)
    feedback = Feedback(tuple(f"p{n}" for n in range(len(pos))),
                        tuple(f"n{n}" for n in range(len(neg))), a, b, c)
    got = fold(Query(vector=query, feedback=feedback), [q, *pos, *neg])
    terms = [(q, a)] if a else []
    terms += [(np.mean(pos, axis=0), b)] if pos and b else []
    terms += [(np.mean(neg, axis=0), -c)] if neg and c else []
    wanted = expected_sum([t for t, _ in terms], [w for _, w in terms]) if terms else None
    if wanted is None:
        assert isinstance(got, Outcome) and got.problem is Problem.INVALID_ARGUMENT
    else:
        assert isinstance(got, np.ndarray) and np.allclose(got, wanted, atol=1e-5)


def test_the_rocchio_defaults_are_the_classic_ones():
    q, p, n = unit("q"), unit("p"), unit("n")
    got = fold(Query(vector=q, feedback=Feedback(("p",), ("n",))), [q, p, n])
    wanted = q + 0.75 * p - 0.15 * n
    assert np.allclose(got, wanted / np.linalg.norm(wanted), atol=1e-6)


def test_one_part_is_that_part_and_a_negative_one_its_opposite():
    v = unit("v")
    assert np.allclose(fold(Query(parts=(Part(Query(vector=v), 2.5),)), [v]), v)
    assert np.allclose(fold(Query(parts=(Part(Query(vector=v), -0.5),)), [v]), -v)


async def test_a_text_minus_itself_is_refused_saying_the_parts_cancel_out(app):
    app, _, _ = app
    (result,) = await app.search("c", [Query(parts=(
        Part(Query(text="a beach")), Part(Query(text="a beach"), -1.0)))], 5, -1.0, [])
    assert result.outcome.problem is Problem.INVALID_ARGUMENT and not result.hits
    assert result.outcome.message == (
        "the parts cancel out: their weighted sum has length 0, under 0.01 of their total "
        "weight 2, so it has no direction to search in; change the weights or drop the parts "
        "that oppose each other")


@pytest.mark.parametrize(("parts", "message"), [
    ((), "compound query has 0 parts; give 1 to 16"),
    ((Part(Query(text="x")),) * 17, "compound query has 17 parts; give 1 to 16"),
    ((Part(Query(text="x"), 0.0),),
     "part 1: weight 0.0 is invalid: give a non-zero number in [-100, 100]"),
    ((Part(Query(text="x")), Part(Query(text="y"), float("nan")), Part(Query(), 1.0)),
     "part 2: weight nan is invalid: give a non-zero number in [-100, 100]; "
     "part 3: part is empty: set text, image, image_id or vector"),
    ((Part(Query(text="x"), 100.5),),
     "part 1: weight 100.5 is invalid: give a non-zero number in [-100, 100]"),
    ((Part(Query(text="x"), float("-inf")),),
     "part 1: weight -inf is invalid: give a non-zero number in [-100, 100]"),
    ((Part(Query(parts=(Part(Query(text="x")),))),),
     "part 1: a part is a text, an image, an image_id or a vector, never a compound query "
     "or feedback"),
])
async def test_malformed_compound_queries_fail_alone_naming_each_bad_part(app, parts, message):
    app, store, embedder = app
    store.calls.clear()
    embedder.calls.clear()
    bad, good = await app.search("c", [Query(parts=parts), Query(image_id="i3")], 3, -1.0, [])
    assert (bad.outcome.problem, bad.outcome.message) == (Problem.INVALID_ARGUMENT, message)
    assert good.outcome.ok and good.hits[0].external_id == "i3"
    assert embedder.calls == []  # a refused query is not embedded


async def test_parts_that_cannot_be_embedded_are_each_named_with_the_first_ones_status(app):
    app, _, _ = app
    first_missing, first_bad = await app.search("c", [
        Query(parts=(Part(Query(text="ok")), Part(Query(image_id="nope")),
                     Part(Query(image=b"bad bytes"), -1.0))),
        Query(parts=(Part(Query(vector=np.ones(3, np.float32))),
                     Part(Query(image_id="gone"))))], 3, -1.0, [])
    assert first_missing.outcome.problem is Problem.NOT_FOUND
    assert first_missing.outcome.message == (
        "part 2 (image_id): image 'nope' is not in collection 'c'; "
        "part 3 (image): bytes are not an image")
    assert first_bad.outcome.problem is Problem.INVALID_ARGUMENT
    assert first_bad.outcome.message == (
        "part 1 (vector): vector has 3 values; the collection's dimension is 8; "
        "part 2 (image_id): image 'gone' is not in collection 'c'")


async def test_every_part_of_every_query_is_embedded_in_one_call_per_kind(app):
    app, store, embedder = app
    store.calls.clear()
    embedder.calls.clear()
    queries = [Query(text="t0"),
               Query(parts=(Part(Query(text="t1")), Part(Query(image=b"x"), -0.5),
                            Part(Query(image_id="i1")))),
               Query(parts=(Part(Query(text="t2")), Part(Query(text="t3"), 2.0))),
               Query(image=b"y", feedback=Feedback(("i2", "i3"), ("i4",)))]
    results = await app.search("c", queries, 3, -1.0, [])
    assert all(r.outcome.ok for r in results)
    assert sorted(embedder.calls) == [("images", 2), ("texts", 4)]
    # get:1 is the collection's query adaptation (none here), read once per cache lifetime.
    assert [c for c in store.calls if c.startswith(("get:", "search:"))] == [
        "get:1", "get:4", "search:4"]


async def test_a_compound_query_ranks_by_its_sum(app):
    app, store, _ = app
    stored = {i.external_id: i.vector for i in await store.get(
        (await app.core.collection("c")), ["i1", "i2"], True)}
    (result,) = await app.search("c", [Query(parts=(
        Part(Query(image_id="i1")), Part(Query(vector=stored["i2"]))))], 20, -1.0, [])
    wanted = stored["i1"] + stored["i2"]
    wanted /= np.linalg.norm(wanted)
    assert result.hits[0].similarity == pytest.approx(
        max(float(np.dot(wanted, unit(f"i{n}".encode().hex()))) for n in range(20)), abs=1e-5)


async def test_unknown_feedback_examples_fail_the_query_not_found_naming_each(app):
    app, _, _ = app
    bad, good = await app.search("c", [
        Query(text="x", feedback=Feedback(("i1", "ghost", "ghost"), ("phantom",))),
        Query(text="x", feedback=Feedback(("i1",), ("i2",)))], 3, -1.0, [])
    assert (bad.outcome.problem, bad.outcome.message) == (
        Problem.NOT_FOUND, "feedback examples are not in collection 'c': 'ghost', 'phantom'")
    assert good.outcome.ok


@pytest.mark.parametrize(("feedback", "message"), [
    (Feedback(("i1",), ("i1",)), "feedback gives 'i1' both as a positive and as a negative "
                                 "example"),
    (Feedback(tuple(f"i{n}" for n in range(65))),
     "feedback has 65 positive examples; the limit is 64"),
    (Feedback((), ("a/b",)), "external id 'a/b' is invalid: use 1-256 characters, no '/' and "
                             "no control characters"),
    (Feedback(positive_weight=10.5), "feedback positive_weight must be in [0, 10]; got 10.5"),
    (Feedback(query_weight=float("nan")), "feedback query_weight must be in [0, 10]; got nan"),
    (Feedback(negative_weight=-1), "feedback negative_weight must be in [0, 10]; got -1"),
    (Feedback(query_weight=0), "feedback leaves nothing to search by: query_weight is 0 and "
                               "no examples with a non-zero weight were given"),
])
async def test_malformed_feedback_fails_its_query_invalid_argument(app, feedback, message):
    app, _, _ = app
    (result,) = await app.search("c", [Query(text="x", feedback=feedback)], 3, -1.0, [])
    assert (result.outcome.problem, result.outcome.message) == (Problem.INVALID_ARGUMENT,
                                                                message)


async def test_feedback_without_examples_changes_nothing(app):
    app, _, _ = app
    plain, empty = await app.search("c", [Query(text="x"), Query(text="x",
                                                                 feedback=Feedback())],
                                    5, -1.0, [])
    assert plain.hits == empty.hits


@pytest.mark.parametrize(("exclude_positives", "include_negatives", "gone"), [
    (False, False, {"i5"}), (True, False, {"i4", "i5"}), (True, True, {"i4"}),
    (False, True, set())])
async def test_examples_left_out_as_asked_and_top_k_still_filled(app, exclude_positives,
                                                                 include_negatives, gone):
    app, _, _ = app
    feedback = Feedback(("i4",), ("i5",), query_weight=0, negative_weight=0.01,
                        exclude_positives=exclude_positives,
                        include_negatives=include_negatives)
    (result,) = await app.search("c", [Query(image_id="i4", feedback=feedback)], 19, -1.0, [])
    ids = {h.external_id for h in result.hits}
    assert len(result.hits) == 19 - (len(gone) == 2) and not ids & gone
    assert (result.hits[0].external_id == "i4") == ("i4" not in gone)


async def test_duplicates_of_a_compound_query_are_similar_and_leave_its_images_out(app):
    app, _, _ = app
    found = await app.find_duplicates("c", Query(parts=(
        Part(Query(image_id="i1")), Part(Query(image_id="i2")), Part(Query(image=b"i3")))),
        -1.0, 30)
    assert found.mode is DuplicateMode.SIMILAR
    assert {h.external_id for h in found.hits} == {f"i{n}" for n in range(20)} - {"i1", "i2"}


@pytest.mark.parametrize(("query", "mode", "message"), [
    (Query(parts=(Part(Query(image_id="i1")),)), DuplicateMode.COPIES,
     "DUPLICATE_MODE_COPIES verifies copies of one picture, and a compound query is a sum of "
     "several: ask for DUPLICATE_MODE_SIMILAR, or leave mode unset"),
    (Query(parts=(Part(Query(image_id="i1")), Part(Query(text="red"), -1.0))), None,
     "FindDuplicates takes image and image_id parts only; part 2 is a text"),
    (Query(image_id="i1", feedback=Feedback(("i2",))), None,
     "feedback refines Search queries only; FindDuplicates looks for one image (or a "
     "compound query of images)"),
])
async def test_duplicates_refuse_what_they_cannot_answer(app, query, mode, message):
    app, _, _ = app
    with pytest.raises(InvalidArgument) as caught:
        await app.find_duplicates("c", query, -1.0, 5, mode=mode)
    assert str(caught.value) == message


async def test_classify_takes_compound_queries_without_their_images_voting(app):
    app, _, _ = app
    compound, refined = await app.classify("c", [
        Query(parts=(Part(Query(image_id="i1")), Part(Query(image_id="i4"), 0.5))),
        Query(image_id="i1", feedback=Feedback(("i2",)))], "label", 17, 0)
    assert compound.outcome.ok and sum(s.votes for s in compound.labels) == 17
    assert (refined.outcome.problem, refined.outcome.message) == (
        Problem.INVALID_ARGUMENT, "feedback refines Search queries only; to classify by "
        "examples, make them image_id parts of a compound query")
