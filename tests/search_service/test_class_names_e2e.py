"""Zero-shot classes by name end to end: the real search service and embedder (the bundled
model), on Milvus Lite and on a Milvus server, through gRPC and HTTP/JSON."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
import pytest_asyncio

from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from search_service import validation as check
from search_service.server import SearchServer
from tests.search_fixtures import add, scene_images, search_settings

COLLECTION = "named"
CLASSES = [f"{c} {s}" for c in synthetic.COLOURS for s in synthetic.SHAPES]


@pytest_asyncio.fixture(scope="module")
async def scenes(search) -> dict[str, synthetic.Scene]:
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION))
    items = scene_images(96, seed=5)
    for start in range(0, len(items), 48):
        response = await add(stub, COLLECTION, items[start:start + 48])
        assert all(r.code == 0 for r in response.results)
    added = await stub.AddClassNames(pb.AddClassNamesRequest(collection=COLLECTION,
                                                             names=CLASSES))
    assert added.class_name_count == len(CLASSES)
    return {i: s for i, _, s in items}


def by_names(*queries: pb.Query, **fields) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(**{"collection": COLLECTION, "queries": queries,
                                 "source": pb.CLASS_SOURCE_NAMES, **fields})


async def test_images_are_labelled_by_their_class_name_without_labelled_images(search, scenes):
    _, stub = search
    ids = list(scenes)[:64]
    response = await stub.Classify(by_names(*[pb.Query(image_id=i) for i in ids],
                                            max_labels=3))
    right = [r.labels[0].label == scenes[i].label for i, r in zip(ids, response.results,
                                                                   strict=True)]
    assert sum(right) / len(right) >= 0.6  # bench/classify_eval.py: 0.81 over 480
    assert all(len(r.labels) == 3 and r.labels[0].votes == 0 for r in response.results)


async def test_each_name_is_still_found_among_a_thousand_more(search, scenes):
    _, stub = search
    distractors = [f"thing number {n}" for n in range(1000)]
    await stub.AddClassNames(pb.AddClassNamesRequest(collection=COLLECTION, names=distractors))
    try:
        response = await stub.Classify(by_names(
            *[pb.Query(text=f"a photo of a {name}") for name in CLASSES], max_labels=1))
    finally:
        await stub.DeleteClassNames(pb.DeleteClassNamesRequest(collection=COLLECTION,
                                                               names=distractors))
    found = [r.labels[0].label for r in response.results]
    assert sum(f == name for f, name in zip(found, CLASSES, strict=True)) >= 44, found


async def test_names_list_in_pages_and_deleted_names_stop_answering(search, scenes):
    _, stub = search
    seen, token = [], ""
    while True:
        page = await stub.ListClassNames(pb.ListClassNamesRequest(
            collection=COLLECTION, page_size=20, page_token=token))
        seen += page.names
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(CLASSES)
    await stub.DeleteClassNames(pb.DeleteClassNamesRequest(collection=COLLECTION,
                                                           names=["red circle"]))
    try:
        red = next(i for i, s in scenes.items() if s.label == "red circle")
        response = await stub.Classify(by_names(pb.Query(image_id=red)))
        assert "red circle" not in {s.label for s in response.results[0].labels}
    finally:
        await stub.AddClassNames(pb.AddClassNamesRequest(collection=COLLECTION,
                                                         names=["red circle"]))


async def test_both_mixes_labelled_shapes_with_shape_names(search, scenes):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="shapes"))
    items = scene_images(48, seed=9)
    await add(stub, "shapes", items)
    await stub.AddClassNames(pb.AddClassNamesRequest(collection="shapes",
                                                     names=list(synthetic.SHAPES)))
    request = pb.ClassifyRequest(collection="shapes", label_key="shape", k=5,
                                 source=pb.CLASS_SOURCE_BOTH, names_weight=0.5,
                                 queries=[pb.Query(image_id=i) for i, _, _ in items])
    response = await stub.Classify(request)
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name="shapes"))
    right = [r.labels[0].label == s.shape for (_, _, s), r in zip(items, response.results,
                                                                   strict=True)]
    assert sum(right) / len(right) >= 0.7
    assert all(abs(sum(x.confidence for x in r.labels) - 1) < 1e-4 for r in response.results)
    await stub.CreateCollection(pb.CreateCollectionRequest(name="shapes"))
    listed = await stub.ListClassNames(pb.ListClassNamesRequest(collection="shapes"))
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name="shapes"))
    assert list(listed.names) == []  # deleted with the collection, not inherited


@pytest.mark.parametrize(("call", "code", "details"), [
    (lambda s: s.AddClassNames(pb.AddClassNamesRequest(collection=COLLECTION, names=[" x"])),
     grpc.StatusCode.INVALID_ARGUMENT,
     "class name 0 (' x') must be printable text with no space at either end"),
    (lambda s: s.AddClassNames(pb.AddClassNamesRequest(collection="nope", names=["x"])),
     grpc.StatusCode.NOT_FOUND, "collection 'nope' does not exist"),
    (lambda s: s.Classify(by_names(pb.Query(text="x"), source=9)),
     grpc.StatusCode.INVALID_ARGUMENT,
     "source 9 is not a ClassSource (LABELLED_IMAGES 1, NAMES 2, BOTH 3)"),
    (lambda s: s.Classify(pb.ClassifyRequest(collection=COLLECTION, label_key="shape",
                                             source=pb.CLASS_SOURCE_BOTH, names_weight=2,
                                             queries=[pb.Query(text="x")])),
     grpc.StatusCode.INVALID_ARGUMENT, "names_weight must be in [0, 1]; got 2.0"),
])
async def test_bad_class_name_calls_fail_with_a_clear_status(search, scenes, call, code,
                                                             details):
    _, stub = search
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub)
    assert (caught.value.code(), caught.value.details()) == (code, details)


async def test_the_bound_and_an_empty_name_set_are_refused(search, scenes, monkeypatch):
    _, stub = search
    monkeypatch.setattr(check, "MAX_CLASS_NAMES", len(CLASSES))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddClassNames(pb.AddClassNamesRequest(collection=COLLECTION, names=["new"]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == (f"collection {COLLECTION!r} holds 48 class names; 1 more "
                                      "would pass the limit of 48: delete some first")
    await stub.CreateCollection(pb.CreateCollectionRequest(name="unnamed"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(pb.ClassifyRequest(collection="unnamed", source=pb.CLASS_SOURCE_NAMES,
                                               queries=[pb.Query(text="a red circle")]))
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name="unnamed"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == ("collection 'unnamed' has no class names to classify by: "
                                      "add them first (AddClassNames)")


async def test_class_names_travel_as_json(embedder_server, tmp_path):
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0))
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as http:
            await (await http.post("/v1/collections", json={"name": "json"})).json()
            added = await (await http.post("/v1/collections/json/classNames", json={
                "names": ["red circle", "blue square"]})).json()
            listed = await (await http.get("/v1/collections/json/classNames")).json()
            reply = await http.post("/v1/collections/json:classify", json={
                "source": "CLASS_SOURCE_NAMES", "queries": [{"text": "a blue square"}]})
            body = await reply.json()
    finally:
        await server.stop(grace=0)
    assert added == {"classNameCount": "2"}
    assert sorted(listed["names"]) == ["blue square", "red circle"]
    assert reply.status == 200 and body["results"][0]["labels"][0]["label"] == "blue square"
