"""Hostile probes of compound queries, feedback and the adaptive cutoff, on the in-memory
fakes: any weights and vectors give a unit vector's hits or a refusal, never an error."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.cutoff import Cutoff
from search_service.domain import Feedback, NewImage, Part, Problem, Query
from tests.search_service.fakes import DIMENSION, FakeEmbedder, FakeStore

IDS = ["a", "b", "c", "d"]


async def make() -> SearchApp:
    app = SearchApp(SearchCore(FakeStore(), FakeEmbedder()))
    for name in ("mine", "theirs"):
        await app.create_collection(name, "")
    await app.add_images("mine", [NewImage(i, i.encode(), {}) for i in IDS])
    await app.add_images("theirs", [NewImage("secret", b"secret", {})])
    return app


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
vectors = st.lists(floats, min_size=DIMENSION - 1, max_size=DIMENSION + 1)
weights = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 100.0, -100.0, 100.0001]))
atoms = st.one_of(vectors.map(lambda v: Query(vector=np.asarray(v, dtype=np.float32))),
                  st.sampled_from([Query(text="sea"), Query(image_id="a"),
                                   Query(image_id="secret"), Query(image_id="a'\\\"/")]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.tuples(atoms, weights), min_size=0, max_size=18),
       cut=st.sampled_from(list(Cutoff)), top_k=st.integers(1, 5))
def test_any_compound_query_answers_or_is_refused_per_query(parts, cut, top_k):
    import asyncio

    async def go():
        app = await make()
        query = Query(parts=tuple(Part(q, w) for q, w in parts))
        (result,) = await app.search("mine", [query], top_k, -1.0, [], cut=cut)
        if result.outcome.ok:
            assert 1 <= len(result.hits) <= top_k
            assert all(np.isfinite(h.similarity) for h in result.hits)
            assert "secret" not in {h.external_id for h in result.hits}
        else:
            assert result.outcome.problem in (Problem.INVALID_ARGUMENT, Problem.NOT_FOUND)
            assert "Traceback" not in result.outcome.message
    asyncio.run(go())


async def test_parts_that_cancel_exactly_or_nearly_are_refused():
    app = await make()
    for w in (-1.0, -0.999):
        (result,) = await app.search("mine", [Query(parts=(
            Part(Query(text="sea"), 1.0), Part(Query(text="sea"), w)))], 2, -1.0, [])
        assert result.outcome.problem is Problem.INVALID_ARGUMENT
        assert "cancel out" in result.outcome.message


async def test_another_collections_image_is_not_found_in_parts_and_feedback():
    app = await make()
    queries = [Query(parts=(Part(Query(image_id="secret")),)),
               Query(text="sea", feedback=Feedback(positive_ids=("secret",))),
               Query(text="sea", feedback=Feedback(negative_ids=("secret",)))]
    for result in await app.search("mine", queries, 2, -1.0, []):
        assert result.outcome.problem is Problem.NOT_FOUND
        assert "'mine'" in result.outcome.message


async def test_cutoff_with_one_hit_or_equal_scores_keeps_them():
    app = await make()
    (one,) = await app.search("mine", [Query(image_id="a")], 1, -1.0, [], cut=Cutoff.GAP)
    assert len(one.hits) == 1
    await app.add_images("mine", [NewImage(i, b"same", {}) for i in ("s1", "s2", "s3")])
    (same,) = await app.search("mine", [Query(image_id="s1")], 3, -1.0, [], cut=Cutoff.GAP)
    assert len(same.hits) == 3


async def test_feedback_without_examples_or_anything_to_search_by():
    app = await make()
    (plain,) = await app.search("mine", [Query(text="sea", feedback=Feedback())], 2, -1.0, [])
    assert plain.outcome.ok
    (empty,) = await app.search("mine", [Query(text="sea", feedback=Feedback(
        query_weight=0.0))], 2, -1.0, [])
    assert empty.outcome.problem is Problem.INVALID_ARGUMENT
