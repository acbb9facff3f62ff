"""Hostile probes of relevance feedback as data, class names and their per-collection spaces:
tenants against each other, odd ids, collections deleted and created again."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from imagesearch.search.v1 import search_pb2 as pb
from tests.search_fixtures import add, scene_images

A, B = "tenant-a", "tenant-b"
# 250 four-byte characters: 1000 UTF-8 bytes, a valid image id (256 characters at most).
WIDE = "\U0001F600" * 250
# 240 of them: 960 bytes, which leave room for a feedback row's '/' and digest.
JUDGEABLE = "\U0001F600" * 240
IDS = ["x", "q'uote", "back\\slash", "ü", WIDE, JUDGEABLE]


@pytest_asyncio.fixture(scope="module")
async def tenants(search):
    _, stub = search
    for name in (A, B):
        await stub.CreateCollection(pb.CreateCollectionRequest(name=name))
        items = [(i, d, s) for i, (_, d, s) in zip(IDS, scene_images(len(IDS), seed=7),
                                                    strict=True)]
        response = await add(stub, name, items)
        assert [r.code for r in response.results] == [0] * len(IDS), response
    return stub


async def everything(stub, collection):
    seen, token = [], ""
    while True:
        page = await stub.ListFeedback(pb.ListFeedbackRequest(
            collection=collection, page_size=2, page_token=token))
        seen += page.feedback
        if not (token := page.next_page_token):
            return seen


def record(collection, query, relevant=(), not_relevant=()):
    return pb.RecordFeedbackRequest(collection=collection, query=query,
                                    relevant_ids=relevant, not_relevant_ids=not_relevant)


async def test_a_wide_unicode_image_id_is_judged_or_refused_cleanly(tenants):
    """Was INTERNAL on a Milvus server: the feedback row's id (image id + 33) passed the
    external_id field's 1024 bytes."""
    stub = tenants
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RecordFeedback(record(A, pb.Query(text="a red circle"), ["x", WIDE]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too long to be judged" in err.value.details()
    assert await everything(stub, A) == []
    made = await stub.RecordFeedback(record(A, pb.Query(text="a red circle"), [JUDGEABLE]))
    assert made.feedback_count == 1
    assert JUDGEABLE in {r.image_id for r in await everything(stub, A)}
    await stub.DeleteImages(pb.DeleteImagesRequest(collection=A, ids=[JUDGEABLE]))
    assert await everything(stub, A) == []


async def test_one_tenant_cannot_delete_or_read_anothers_feedback(tenants):
    stub = tenants
    made = await stub.RecordFeedback(record(A, pb.Query(text="blue"), ["x", "q'uote"],
                                            ["back\\slash"]))
    await stub.DeleteFeedback(pb.DeleteFeedbackRequest(collection=B, ids=made.feedback_ids))
    await stub.DeleteFeedback(pb.DeleteFeedbackRequest(collection=B, image_ids=["x"]))
    await stub.DeleteFeedback(pb.DeleteFeedbackRequest(collection=B, all=True))
    assert set(made.feedback_ids) <= {r.id for r in await everything(stub, A)}
    assert await everything(stub, B) == []
    # A page token of A's is only a position: in B it shows B's rows, none of A's.
    page = await stub.ListFeedback(pb.ListFeedbackRequest(collection=A, page_size=1))
    other = await stub.ListFeedback(pb.ListFeedbackRequest(
        collection=B, page_size=1, page_token=page.next_page_token))
    assert list(other.feedback) == []
    # Examples from another collection are refused, not read.
    await stub.DeleteImages(pb.DeleteImagesRequest(collection=B, ids=["ü"]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RecordFeedback(record(B, pb.Query(image_id="ü"), ["x"]))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    response = await stub.Search(pb.SearchRequest(collection=B, top_k=2, queries=[pb.Query(
        text="red", feedback=pb.Feedback(positive_ids=["ü"]))]))
    assert response.results[0].status.code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_collection_created_again_has_no_old_feedback_or_class_names(tenants):
    stub = tenants
    await stub.CreateCollection(pb.CreateCollectionRequest(name="reborn"))
    await add(stub, "reborn", [(i, d, s) for i, (_, d, s) in zip(IDS[:2], scene_images(2, 7),
                                                                  strict=True)])
    await stub.RecordFeedback(record("reborn", pb.Query(text="red"), ["x"]))
    await stub.AddClassNames(pb.AddClassNamesRequest(collection="reborn", names=["cat"]))
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name="reborn"))
    await stub.CreateCollection(pb.CreateCollectionRequest(name="reborn"))
    assert await everything(stub, "reborn") == []
    names = await stub.ListClassNames(pb.ListClassNamesRequest(collection="reborn"))
    assert list(names.names) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Classify(pb.ClassifyRequest(collection="reborn", queries=[pb.Query(
            text="cat")], source=pb.CLASS_SOURCE_NAMES))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("ids", [["nope"], ["x", "nope"]])
async def test_judging_missing_images_records_nothing(tenants, ids):
    stub = tenants
    before = len(await everything(stub, B))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RecordFeedback(record(B, pb.Query(text="green"), ids))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(await everything(stub, B)) == before


@pytest.mark.parametrize("bad", ["", "x/", "x/zz", "/" + "0" * 32, "x\n/" + "0" * 32])
async def test_bad_feedback_ids_are_invalid_argument(tenants, bad):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await tenants.DeleteFeedback(pb.DeleteFeedbackRequest(collection=A, ids=[bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_judgement_racing_the_deletion_of_its_image_is_not_left_behind():
    """RecordFeedback checks its images, then writes: a DeleteImages landing in between
    deleted the image and found no feedback to clean up, and the judgement of an image the
    collection no longer holds stayed for good."""
    from imagesearch.errors import NotFound
    from search_service import feedback_space
    from search_service.application import SearchApp
    from search_service.core import SearchCore
    from search_service.domain import NewImage, Query
    from tests.search_service.fakes import FakeEmbedder, FakeStore

    store = FakeStore()
    app = SearchApp(SearchCore(store, FakeEmbedder()))
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage(i, i.encode(), {}) for i in ("a", "b")])
    upsert, raced = store.upsert, []

    async def racing(record, ids, vectors, metadata):
        if record.model.model_name.startswith("feedback") and not raced:
            raced.append(True)
            await app.delete_images("c", ["a"])
        return await upsert(record, ids, vectors, metadata)

    store.upsert = racing  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        await app.record_feedback("c", Query(text="sea"), ["a"], ["b"])
    page, _ = await app.list_feedback("c", 100, "", False)
    assert [feedback_space.image_of(r.id) for r in page] == ["b"]


def forged(after: str) -> str:
    import base64
    import json
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


@pytest.mark.parametrize("after", ['" or collection != "', "\\", "x" * 5000, "\t", "",
                                   "\U0001F600" * 300])
async def test_forged_page_tokens_read_only_the_collections_own_rows(tenants, after):
    stub = tenants
    await stub.RecordFeedback(record(A, pb.Query(text="forged"), ["x"]))
    await stub.AddClassNames(pb.AddClassNamesRequest(collection=A, names=["forged"]))
    for call, request in ((stub.ListFeedback, pb.ListFeedbackRequest),
                          (stub.ListClassNames, pb.ListClassNamesRequest)):
        try:
            page = await call(request(collection=B, page_token=forged(after)))
        except grpc.aio.AioRpcError as err:
            refused = (err.code(), "page_token" in (err.details() or ""))
            page = None
        else:
            refused = (grpc.StatusCode.INVALID_ARGUMENT, True)
            assert "forged" not in str(page)
        assert refused == (grpc.StatusCode.INVALID_ARGUMENT, True)
