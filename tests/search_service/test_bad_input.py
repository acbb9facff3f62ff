"""Bad input, found from outside: each gets the right status, fails only its own item or
query where the API says so, and loses nothing already stored."""

from __future__ import annotations

import math

import grpc
import pytest
import pytest_asyncio

from imagesearch.search.v1 import search_pb2 as pb
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
