"""Zero-shot classes by name, on the in-memory fakes: the prompt ensemble, the limits and the
bound, and the mix with the labelled images' vote (held to its definition by hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagesearch.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from search_service import analysis, class_names
from search_service import validation as check
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import ClassSource, LabelScore, NewImage, Query
from search_service.errors import CollectionNotFound
from tests.search_service.fakes import FakeEmbedder, FakeStore, unit


@pytest.fixture
def parts() -> tuple[SearchApp, FakeStore, FakeEmbedder]:
    store, embedder = FakeStore(), FakeEmbedder()
    return SearchApp(SearchCore(store, embedder)), store, embedder


def ensemble(name: str) -> np.ndarray:
    total = sum(unit("text:" + p.format(name)) for p in class_names.PROMPTS)
    return total / np.linalg.norm(total)


async def test_a_name_is_kept_as_the_normalised_mean_of_its_prompts(parts):
    app, store, embedder = parts
    await app.create_collection("c", "")
    assert await app.add_class_names("c", ["red circle", "AC/DC"]) == 2
    record = class_names.of(store.records["c"])
    (kept,) = await store.get(record, [class_names.row_id("AC/DC")], True)
    assert kept.metadata == {"name": "AC/DC"}
    np.testing.assert_allclose(kept.vector, ensemble("AC/DC"), atol=1e-6)
    assert embedder.calls[-1] == ("texts", 2 * len(class_names.PROMPTS))  # one call


async def test_names_classify_a_query_by_its_nearest_name_with_softmax_shares(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    await app.add_class_names("c", ["cat", "dog", "bird"])
    (result,) = await app.classify("c", [Query(vector=ensemble("dog"))], "", 0, 0,
                                   source=ClassSource.NAMES)
    assert result.labels[0].label == "dog"
    assert sum(s.confidence for s in result.labels) == pytest.approx(1)
    assert all(s.votes == 0 for s in result.labels)


async def test_the_space_depends_on_the_model_and_the_prompts(parts, monkeypatch):
    app, store, _ = parts
    await app.create_collection("c", "")
    before = class_names.of(store.records["c"]).model
    monkeypatch.setattr(class_names, "PROMPTS", ("{}",))
    after = class_names.of(store.records["c"]).model
    assert before.fingerprint != after.fingerprint
    assert before.fingerprint != store.records["c"].model.fingerprint


@pytest.mark.parametrize(("names", "message"), [
    ([], "request has no class names"),
    (["x"] * 2, "class names must be distinct"),
    (["ok", ""], "class name 1 must be 1 to 200 characters; got 0"),
    (["a" * 201], "class name 0 must be 1 to 200 characters; got 201"),
    (["cat "], "class name 0 ('cat ') must be printable text with no space at either end"),
    (["tab\there"], "must be printable text"),
    (["\ud800"], "must be printable text"),
    ([str(n) for n in range(1001)], "request has 1001 class names; the limit is 1000"),
])
async def test_bad_names_are_refused_before_any_work(parts, names, message):
    app, store, embedder = parts
    await app.create_collection("c", "")
    for call in (app.add_class_names, app.delete_class_names):
        with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
            await call("c", names)
    assert embedder.calls == [] and "upsert" not in store.calls


async def test_the_bound_refuses_a_whole_call_and_counts_only_new_names(parts, monkeypatch):
    app, _, _ = parts
    monkeypatch.setattr(check, "MAX_CLASS_NAMES", 3)
    await app.create_collection("c", "")
    await app.add_class_names("c", ["a", "b"])
    assert await app.add_class_names("c", ["a", "b", "c"]) == 3  # a and b again: no new room
    with pytest.raises(ResourceExhausted, match="holds 3 class names; 1 more would pass the "
                                                "limit of 3: delete some first"):
        await app.add_class_names("c", ["a", "d"])
    await app.delete_class_names("c", ["c", "never-added"])
    assert await app.add_class_names("c", ["d"]) == 3


async def test_names_list_in_pages_and_go_with_their_collection(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    added = [f"class {n}" for n in range(7)]
    await app.add_class_names("c", added)
    seen, token = [], ""
    while True:
        page, token = await app.list_class_names("c", 3, token)
        seen += page
        if not token:
            break
    assert sorted(seen) == sorted(added)
    await app.delete_collection("c")
    await app.create_collection("c", "")
    assert await app.list_class_names("c", 0, "") == ([], "")
    with pytest.raises(CollectionNotFound):
        await app.add_class_names("gone", ["x"])


async def test_classifying_by_names_without_any_says_how_to_add_them(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    with pytest.raises(FailedPrecondition, match="has no class names to classify by: add "
                                                 r"them first \(AddClassNames\)"):
        await app.classify("c", [Query(text="x")], "", 0, 0, source=ClassSource.NAMES)


async def test_both_mixes_the_vote_and_the_names_and_bad_weights_are_refused(parts):
    app, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage("i1", b"i1", {"label": "cat"})])
    await app.add_class_names("c", ["cat", "dog"])
    query = [Query(vector=ensemble("dog"))]
    (voted,) = await app.classify("c", query, "label", 1, 0)
    (both,) = await app.classify("c", query, "label", 1, 0, source=ClassSource.BOTH,
                                 names_weight=0.25)
    assert [(s.label, s.votes) for s in voted.labels] == [("cat", 1)]
    scores = {s.label: s.confidence for s in both.labels}
    assert scores["cat"] == pytest.approx(0.75 + 0.25 * (1 - scores["dog"] / 0.25))
    for weight in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidArgument, match="names_weight must be in"):
            await app.classify("c", query, "label", 1, 0, source=ClassSource.BOTH,
                               names_weight=weight)


labels = st.sampled_from("abcdef")
shares = st.dictionaries(labels, st.floats(0.01, 1), max_size=6)


def normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


@given(shares, shares, st.floats(0, 1))
def test_the_mix_is_the_documented_convex_sum(voted_weights, named_weights, weight):
    voted = [LabelScore(k, v, 1) for k, v in normalised(voted_weights).items()] \
        if voted_weights else []
    named = normalised(named_weights) if named_weights else {}
    mixed = analysis.mix(voted, named, weight, 0)
    effective = weight if voted and named else float(bool(named))
    assert {s.label for s in mixed} == {s.label for s in voted} | named.keys()
    if mixed:
        assert sum(s.confidence for s in mixed) == pytest.approx(1)
    confidences = [s.confidence for s in mixed]
    assert confidences == sorted(confidences, reverse=True)
    shares_voted = {s.label: s.confidence for s in voted}
    for score in mixed:
        assert score.confidence == pytest.approx(
            (1 - effective) * shares_voted.get(score.label, 0) + effective * named.get(
                score.label, 0))
