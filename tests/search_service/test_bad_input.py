"""Bad input, found from outside: each gets the right status, fails only its own item or
query where the API says so, and loses nothing already stored."""

from __future__ import annotations

import math

import grpc
import pytest
import pytest_asyncio

from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from tests.search_fixtures import scene_images

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@pytest_asyncio.fixture(scope="module")
async def kept(search) -> list[str]:
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="kept"))
    items = scene_images(4, seed=21)
    await stub.AddImages(pb.AddImagesRequest(collection="kept", images=[
        pb.NewImage(id=i, data=d, metadata={"label": pb.MetadataValue(string_value="x")})
        for i, d, _ in items]))
    return [i for i, _, _ in items]


async def stored(stub, collection: str = "kept") -> dict[str, dict[str, object]]:
    listed = await stub.ListImages(pb.ListImagesRequest(collection=collection, page_size=100))
    return {i.id: {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                   for k, v in i.metadata.items()} for i in listed.images}


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
async def test_a_non_finite_metadata_number_fails_only_its_image(search, kept, number):
    _, stub = search
    before = await stored(stub)
    (image,) = scene_images(1, seed=22)
    response = await stub.AddImages(pb.AddImagesRequest(collection="kept", images=[
        pb.NewImage(id=kept[0], data=image[1],
                    metadata={"score": pb.MetadataValue(double_value=number)}),
        pb.NewImage(id="finite", data=image[1],
                    metadata={"score": pb.MetadataValue(double_value=0.5)})]))
    assert [r.code for r in response.results] == [INVALID, 0]
    assert response.results[0].message == f"metadata 'score' is {number}; numbers must be finite"
    after = await stored(stub)
    assert after.pop("finite") == {"score": 0.5}
    assert after == before
    await stub.DeleteImages(pb.DeleteImagesRequest(collection="kept", ids=["finite"]))


async def test_a_metadata_value_without_a_kind_fails_only_its_image(search, kept):
    _, stub = search
    (image,) = scene_images(1, seed=23)
    response = await stub.AddImages(pb.AddImagesRequest(collection="kept", images=[
        pb.NewImage(id="no-kind", data=image[1], metadata={"label": pb.MetadataValue()}),
        pb.NewImage(id="with-kind", data=image[1])]))
    assert [r.code for r in response.results] == [INVALID, 0]
    assert "metadata 'label' has no value" in response.results[0].message
    await stub.DeleteImages(pb.DeleteImagesRequest(collection="kept", ids=["with-kind"]))


async def test_a_metadata_value_without_a_kind_fails_only_its_image_in_a_stream(search, kept):
    _, stub = search
    images = scene_images(3, seed=24)
    requests = [pb.IngestImagesRequest(collection="kept", image=pb.NewImage(
        id=f"s{n}", data=d, metadata={"label": pb.MetadataValue()} if n == 1 else {}))
        for n, (_, d, _) in enumerate(images)]
    acks = [ack async for ack in stub.IngestImages(iter(requests))]
    assert [(a.id, a.status.code) for a in acks] == [("s0", 0), ("s1", INVALID), ("s2", 0)]
    assert {"s0", "s2"} <= (await stored(stub)).keys()
    assert "s1" not in await stored(stub)
    await stub.DeleteImages(pb.DeleteImagesRequest(collection="kept", ids=["s0", "s2"]))


@pytest.mark.parametrize("call", ["search", "duplicates"])
@pytest.mark.parametrize("similarity", [math.nan, 1.5, -2.0])
async def test_min_similarity_must_be_a_number_in_range(search, kept, call, similarity):
    _, stub = search
    if call == "search":
        request = stub.Search(pb.SearchRequest(collection="kept", min_similarity=similarity,
                                               queries=[pb.Query(text="a red circle")]))
    else:
        request = stub.FindDuplicates(pb.FindDuplicatesRequest(
            collection="kept", min_similarity=similarity, query=pb.Query(image_id=kept[0])))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await request
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"min_similarity must be in [-1, 1]; got {similarity}"


@pytest.mark.parametrize("max_labels", [-1, 1001])
async def test_classify_refuses_a_max_labels_out_of_range(search, kept, max_labels):
    _, stub = search
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(pb.ClassifyRequest(collection="kept", label_key="label",
                                               max_labels=max_labels,
                                               queries=[pb.Query(image_id=kept[0])]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"max_labels must be 0 (all) to 1000; got {max_labels}"


async def test_find_duplicates_of_an_unknown_image_id_is_not_found(search, kept):
    _, stub = search
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.FindDuplicates(pb.FindDuplicatesRequest(
            collection="kept", query=pb.Query(image_id="never-added")))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "image 'never-added' is not in collection 'kept'"


@pytest.mark.parametrize("after", ["\ud800", "a\x00b", "nel\u0085", 7, None])
@pytest.mark.parametrize("call", ["ListImages", "ListCollections"])
async def test_a_crafted_page_token_is_invalid_not_internal(search, kept, call, after):
    """Found from outside: base64('{"after": "\\ud800"}') reached pymilvus and failed INTERNAL."""
    import base64
    import json

    _, stub = search
    token = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
    request = (pb.ListImagesRequest(collection="kept", page_token=token) if call == "ListImages"
               else pb.ListCollectionsRequest(page_token=token))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, call)(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "page_token is invalid; pass next_page_token unchanged"


async def test_metadata_is_bounded_per_image_so_pages_and_hits_fit_a_message(search, kept):
    """Found from outside: 64 entries of 4096 emoji (1 MiB per image) made pages of 100
    images and searches of top_k 100 unanswerable."""
    _, stub = search
    (image,) = scene_images(1, seed=25)
    fat = {f"k{n}": pb.MetadataValue(string_value="\U0001f680" * 4096) for n in range(64)}
    response = await stub.AddImages(pb.AddImagesRequest(collection="kept", images=[
        pb.NewImage(id="fat", data=image[1], metadata=fat)]))
    (result,) = response.results
    assert result.code == INVALID
    assert result.message.endswith("bytes as JSON; at most 16384 per image")


async def test_an_answer_over_the_message_limit_says_how_to_ask_for_less(embedder_server,
                                                                       milvus_backend):
    from search_service.server import SearchServer
    from tests.search_fixtures import search_settings

    server = SearchServer(search_settings(milvus_backend.new_uri(), embedder_server.port,
                                          max_message_bytes=300_000))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="big"))
            images = scene_images(30, seed=26)
            await stub.AddImages(pb.AddImagesRequest(collection="big", images=[pb.NewImage(
                id=i, data=d, metadata={"note": pb.MetadataValue(string_value="x" * 4000)})
                for i, d, _ in images]))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Search(pb.SearchRequest(collection="big", top_k=30, queries=[
                    pb.Query(text=f"shape {n}") for n in range(4)]))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "over the 300000-byte message limit: ask for fewer results" in (
                caught.value.details())
            small = await stub.Search(pb.SearchRequest(collection="big", top_k=5, queries=[
                pb.Query(text="a red circle")]))
            assert len(small.results[0].hits) == 5
    finally:
        await server.stop(grace=0)
