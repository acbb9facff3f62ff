"""Relevance feedback as data end to end: the real search service and embedder, on Milvus Lite
and on a Milvus server, through gRPC and HTTP/JSON."""

from __future__ import annotations

import base64

import aiohttp
import grpc
import numpy as np
import pytest
import pytest_asyncio

from imagesearch.search.v1 import search_pb2 as pb
from search_service import validation as check
from search_service.server import SearchServer
from tests.search_fixtures import add, scene_images, search_settings

COLLECTION = "judged"
# Ids whose feedback rows sort next to each other's ('a b/...' < 'a/...' < 'a0/...').
IDS = ["a", "a b", "a-", "a0", "ab", "b"]


@pytest_asyncio.fixture(scope="module")
async def images(search) -> list[str]:
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION))
    items = [(i, data, s) for i, (_, data, s) in zip(IDS, scene_images(len(IDS), seed=3),
                                                      strict=True)]
    response = await add(stub, COLLECTION, items)
    assert all(r.code == 0 for r in response.results)
    return IDS


async def everything(stub, vectors: bool = False) -> list[pb.FeedbackRecord]:
    seen, token = [], ""
    while True:
        page = await stub.ListFeedback(pb.ListFeedbackRequest(
            collection=COLLECTION, page_size=2, page_token=token, include_vectors=vectors))
        seen += page.feedback
        if not (token := page.next_page_token):
            return seen


def record(query: pb.Query, relevant=(), not_relevant=(), collection=COLLECTION):
    return pb.RecordFeedbackRequest(collection=collection, query=query,
                                    relevant_ids=relevant, not_relevant_ids=not_relevant)


async def test_judgements_are_kept_listed_with_vectors_and_replaced(search, images):
    _, stub = search
    made = await stub.RecordFeedback(record(pb.Query(text="a red circle"), ["a", "a b"], ["b"]))
    assert made.feedback_count == 3 and len(set(made.feedback_ids)) == 3
    again = await stub.RecordFeedback(record(pb.Query(text="a red circle"), [], ["a"]))
    assert again.feedback_count == 3 and again.feedback_ids[0] == made.feedback_ids[0]
    kept = {r.image_id: r for r in await everything(stub, vectors=True)}
    assert {i: r.relevant for i, r in kept.items()} == {"a": False, "a b": True, "b": False}
    assert (kept["a"].query_kind, kept["a"].query_description) == ("text", "a red circle")
    text = await stub.Search(pb.SearchRequest(collection=COLLECTION, top_k=1,
                                              queries=[pb.Query(text="a red circle")]))
    assert text.results[0].status.code == 0
    vector = np.asarray(kept["a"].query_vector)
    assert vector.ndim == 1 and vector.size >= 32 and abs(np.linalg.norm(vector) - 1) < 1e-4
    assert kept["a"].record_time.seconds > 0
    await stub.DeleteFeedback(pb.DeleteFeedbackRequest(collection=COLLECTION, all=True))
    assert await everything(stub) == []


async def test_deleting_images_deletes_their_feedback_and_only_theirs(search, images):
    _, stub = search
    for text in ("one", "two", "three"):
        await stub.RecordFeedback(record(pb.Query(text=text), IDS[:3], IDS[3:]))
    await stub.DeleteImages(pb.DeleteImagesRequest(collection=COLLECTION, ids=["a"]))
    left = sorted(r.image_id for r in await everything(stub))
    assert left == sorted(IDS[1:] * 3)
    await stub.DeleteFeedback(pb.DeleteFeedbackRequest(collection=COLLECTION, image_ids=["a b"]))
    by_id = (await everything(stub))[0]
    await stub.DeleteFeedback(pb.DeleteFeedbackRequest(collection=COLLECTION, ids=[by_id.id]))
    left = [r.image_id for r in await everything(stub)]
    assert "a b" not in left and len(left) == 3 * 4 - 1
    await stub.DeleteFeedback(pb.DeleteFeedbackRequest(collection=COLLECTION, all=True))


@pytest.mark.parametrize(("call", "code", "details"), [
    (lambda s: s.RecordFeedback(record(pb.Query(text="t"), ["b"], collection="nope")),
     grpc.StatusCode.NOT_FOUND, "collection 'nope' does not exist"),
    (lambda s: s.RecordFeedback(record(pb.Query(text="t"), ["b", "gone"])),
     grpc.StatusCode.NOT_FOUND,
     f"images 'gone' are not in collection {COLLECTION!r}: nothing was recorded"),
    (lambda s: s.RecordFeedback(record(pb.Query(text="t"), ["b"], ["b"])),
     grpc.StatusCode.INVALID_ARGUMENT,
     "images 'b' are judged more than once: give each image once, relevant or not"),
    (lambda s: s.RecordFeedback(record(pb.Query(image_id="gone"), ["b"])),
     grpc.StatusCode.NOT_FOUND, f"query: image 'gone' is not in collection {COLLECTION!r}"),
    (lambda s: s.RecordFeedback(record(pb.Query(text="t", feedback=pb.Feedback(
        positive_ids=["b"])), ["b"])),
     grpc.StatusCode.INVALID_ARGUMENT, "record the query itself, not one refined by feedback"),
    (lambda s: s.ListFeedback(pb.ListFeedbackRequest(collection="nope")),
     grpc.StatusCode.NOT_FOUND, "collection 'nope' does not exist"),
    (lambda s: s.DeleteFeedback(pb.DeleteFeedbackRequest(collection=COLLECTION)),
     grpc.StatusCode.INVALID_ARGUMENT, "give exactly one of ids, image_ids and all"),
    (lambda s: s.DeleteFeedback(pb.DeleteFeedbackRequest(collection=COLLECTION, ids=["x"])),
     grpc.StatusCode.INVALID_ARGUMENT,
     "feedback id 'x' is invalid: pass a FeedbackRecord.id unchanged"),
])
async def test_bad_feedback_calls_fail_with_a_clear_status(search, images, call, code,
                                                           details):
    _, stub = search
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub)
    assert (caught.value.code(), caught.value.details()) == (code, details)
    assert await everything(stub) == []


async def test_the_bound_refuses_whole_and_feedback_goes_with_its_collection(search, images,
                                                                             monkeypatch):
    _, stub = search
    monkeypatch.setattr(check, "MAX_FEEDBACK", 2)
    await stub.RecordFeedback(record(pb.Query(text="t"), ["a b", "b"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFeedback(record(pb.Query(text="u"), ["b"]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == (f"collection {COLLECTION!r} holds 2 feedback judgements; "
                                      "1 more would pass the limit of 2: delete some first")
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name=COLLECTION))
    await stub.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION))
    try:
        assert await everything(stub) == []  # deleted with the collection, not inherited
    finally:
        await stub.DeleteCollection(pb.DeleteCollectionRequest(name=COLLECTION))


async def test_feedback_travels_as_json(embedder_server, tmp_path):
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0))
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as http:
            await http.post("/v1/collections", json={"name": "json"})
            await http.post("/v1/collections/json/images", json={"images": [
                {"id": "i", "data": scene_b64()}]})
            made = await (await http.post("/v1/collections/json/feedback", json={
                "query": {"text": "a blue square"}, "relevantIds": ["i"]})).json()
            listed = await (await http.get("/v1/collections/json/feedback")).json()
            gone = await http.post("/v1/collections/json/feedback:delete", json={"all": True})
    finally:
        await server.stop(grace=0)
    assert made["feedbackCount"] == "1"
    (only,) = listed["feedback"]
    assert (only["imageId"], only["relevant"], only["queryDescription"]) == (
        "i", True, "a blue square")
    assert gone.status == 200


def scene_b64() -> str:
    return base64.b64encode(scene_images(1, seed=1)[0][1]).decode()
