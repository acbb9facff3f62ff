"""The learned query adaptation end to end: the real search service and embedder, on Milvus
Lite and on a Milvus server, through gRPC. Its hostile probes: test_adaptation_hostile.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from imagesearch.search.v1 import search_pb2 as pb
from search_service import adaptation
from tests.search_fixtures import add, scene_images

COLLECTION = "adapted"
IMAGES = 20


async def judged_collection(stub, name: str) -> list[str]:
    """IMAGES images and MIN_QUERIES text queries, each judging one image relevant and four
    not (MIN_JUDGEMENTS judgements): just enough feedback for a fit."""
    await stub.CreateCollection(pb.CreateCollectionRequest(name=name))
    items = scene_images(IMAGES, seed=17)
    assert all(r.code == 0 for r in (await add(stub, name, items)).results)
    ids = [i for i, _, _ in items]
    for q in range(adaptation.MIN_QUERIES):
        await stub.RecordFeedback(pb.RecordFeedbackRequest(
            collection=name, query=pb.Query(text=f"a picture number {q}"),
            relevant_ids=[ids[q % IMAGES]],
            not_relevant_ids=[ids[(q + k) % IMAGES] for k in range(1, 5)]))
    return ids


async def fitted(stub, name: str) -> pb.Adaptation:
    for _ in range(600):
        state = (await stub.GetAdaptation(pb.GetAdaptationRequest(collection=name))).adaptation
        if state.fit_state != pb.FIT_STATE_FITTING:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError("the fit did not end in 60 s")


async def scores(stub, name: str, query: pb.Query) -> dict[str, float]:
    response = await stub.Search(pb.SearchRequest(collection=name, top_k=IMAGES,
                                                  queries=[query]))
    return {h.id: round(h.similarity, 4) for h in response.results[0].hits}


@pytest_asyncio.fixture(scope="module")
async def judged(search) -> list[str]:
    _, stub = search
    return await judged_collection(stub, COLLECTION)


async def test_a_fit_is_kept_switched_and_reset(search, judged):
    _, stub = search
    text, image = pb.Query(text="a picture number 3"), pb.Query(image_id=judged[5])
    plain_text, plain_image = await scores(stub, COLLECTION, text), await scores(
        stub, COLLECTION, image)
    started = await stub.FitAdaptation(pb.FitAdaptationRequest(collection=COLLECTION))
    assert started.adaptation.fit_state == pb.FIT_STATE_FITTING
    done = await fitted(stub, COLLECTION)
    assert (done.fit_state, done.version, done.enabled) == (pb.FIT_STATE_DONE, 1, False)
    assert (done.queries_used, done.judgements_used) == (adaptation.MIN_QUERIES,
                                                         adaptation.MIN_JUDGEMENTS)
    assert done.held_out_queries > 0 and done.fitted_time.seconds > 0
    assert await scores(stub, COLLECTION, text) == plain_text  # kept, switched off
    on = await stub.SetAdaptationEnabled(pb.SetAdaptationEnabledRequest(
        collection=COLLECTION, enabled=True))
    assert (on.adaptation.version, on.adaptation.enabled) == (1, True)
    info = await stub.GetCollection(pb.GetCollectionRequest(name=COLLECTION))
    assert info.collection.adaptation == on.adaptation
    assert await scores(stub, COLLECTION, text) != plain_text
    assert await scores(stub, COLLECTION, image) == plain_image  # image queries as they were
    skipping = pb.Query(text=text.text, skip_adaptation=True)
    assert await scores(stub, COLLECTION, skipping) == plain_text
    await stub.ResetAdaptation(pb.ResetAdaptationRequest(collection=COLLECTION))
    gone = (await stub.GetAdaptation(pb.GetAdaptationRequest(collection=COLLECTION))).adaptation
    assert (gone.version, gone.enabled) == (0, False)
    assert await scores(stub, COLLECTION, text) == plain_text
    # Recorded feedback outlives the map: the next fit is version 1 again.
    await stub.FitAdaptation(pb.FitAdaptationRequest(collection=COLLECTION))
    assert (await fitted(stub, COLLECTION)).version == 1


async def test_a_collection_with_too_little_feedback_is_told_what_it_needs(search, judged):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="unjudged"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.FitAdaptation(pb.FitAdaptationRequest(collection="unjudged", enable=True))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == (
        "collection 'unjudged' has 0 judged text queries with a relevant image and 0 "
        "judgements of text queries; an adaptation needs at least 40 and 200: record more "
        "feedback (RecordFeedback) on text queries first")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SetAdaptationEnabled(pb.SetAdaptationEnabledRequest(
            collection="unjudged", enabled=True))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == ("collection 'unjudged' has no fitted adaptation to "
                                       "switch: fit one first (FitAdaptation)")
