"""Tenants attack each other through the ids, names and filters they send: nothing they send
reaches another collection's rows, and every id the service accepts stays usable.

Each of these failed on main once: pymilvus built `pk in ['...']` from the ids unescaped.
"""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from imagesearch.search.v1 import search_pb2 as pb
from tests.search_fixtures import scene_images

# Ids written to break out of an expression, in both quoting styles, and ones that only look odd.
ATTACKS = [
    "x'] or collection == 'victim' or pk in ['y",
    'x"] or collection == "victim" or pk in ["y',
    "x') or (collection == 'victim'",
    'x") or (collection == "victim"',
    "x' || collection != '",
    "*",
    "%",
]
ODD_IDS = ["it's", 'say "cheese"', "back\\slash", "trailing\\", "\\'", '\\"', "q\\\"q",
           "100% [done] (v2) {x}", "ü 日本 🚀", "a\\nb", "a\\u0041", "   spaced   ", "$1", "--",
           "#", "~tilde"]


@pytest_asyncio.fixture(scope="module")
async def victim(search) -> list[str]:
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="victim"))
    await stub.CreateCollection(pb.CreateCollectionRequest(name="attacker"))
    items = scene_images(6, seed=11)
    await stub.AddImages(pb.AddImagesRequest(collection="victim", images=[
        pb.NewImage(id=i, data=d) for i, d, _ in items]))
    return [i for i, _, _ in items]


async def victim_ids(stub) -> set[str]:
    listed = await stub.ListImages(pb.ListImagesRequest(collection="victim", page_size=100))
    return {image.id for image in listed.images}


@pytest.mark.parametrize("attack", ATTACKS)
async def test_an_id_cannot_read_another_collection(search, victim, attack):
    _, stub = search
    got = await stub.GetImages(pb.GetImagesRequest(collection="attacker", ids=[attack],
                                                   include_vectors=True))
    assert list(got.images) == []
    assert list(got.missing_ids) == [attack]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_an_id_cannot_delete_from_another_collection(search, victim, attack):
    _, stub = search
    await stub.DeleteImages(pb.DeleteImagesRequest(collection="attacker", ids=[attack]))
    assert await victim_ids(stub) == set(victim)


@pytest.mark.parametrize("attack", ATTACKS)
async def test_an_image_id_query_cannot_use_another_collections_vector(search, victim, attack):
    _, stub = search
    response = await stub.Search(pb.SearchRequest(collection="attacker", queries=[
        pb.Query(image_id=attack)]))
    (result,) = response.results
    assert result.status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert list(result.hits) == []


async def test_another_collections_row_key_is_not_an_id(search, victim):
    _, stub = search
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetImages(pb.GetImagesRequest(collection="attacker",
                                                 ids=[f"victim/{victim[0]}"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no '/'" in caught.value.details()
    response = await stub.Search(pb.SearchRequest(collection="attacker", queries=[
        pb.Query(image_id=f"victim/{victim[0]}"), pb.Query(text="a red circle")]))
    assert [r.status.code for r in response.results] == [
        grpc.StatusCode.INVALID_ARGUMENT.value[0], 0]
    assert await victim_ids(stub) == set(victim)


async def test_every_accepted_id_can_be_fetched_searched_listed_and_deleted(search):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="odd-ids"))
    images = scene_images(len(ODD_IDS), seed=12)
    response = await stub.AddImages(pb.AddImagesRequest(collection="odd-ids", images=[
        pb.NewImage(id=odd, data=d) for odd, (_, d, _) in zip(ODD_IDS, images, strict=True)]))
    assert [r.code for r in response.results] == [0] * len(ODD_IDS)

    got = await stub.GetImages(pb.GetImagesRequest(collection="odd-ids", ids=ODD_IDS))
    assert sorted(i.id for i in got.images) == sorted(ODD_IDS)
    assert list(got.missing_ids) == []
    listed = await stub.ListImages(pb.ListImagesRequest(collection="odd-ids", page_size=5))
    seen = {i.id for i in listed.images}
    while listed.next_page_token:
        listed = await stub.ListImages(pb.ListImagesRequest(
            collection="odd-ids", page_size=5, page_token=listed.next_page_token))
        seen |= {i.id for i in listed.images}
    assert seen == set(ODD_IDS)
    found = await stub.Search(pb.SearchRequest(collection="odd-ids", top_k=1, queries=[
        pb.Query(image_id=odd) for odd in ODD_IDS]))
    assert [r.status.code for r in found.results] == [0] * len(ODD_IDS)
    assert [r.hits[0].id for r in found.results] == ODD_IDS
    duplicates = await stub.FindDuplicates(pb.FindDuplicatesRequest(
        collection="odd-ids", query=pb.Query(image_id=ODD_IDS[0])))
    assert ODD_IDS[0] not in [d.id for d in duplicates.duplicates]

    await stub.DeleteImages(pb.DeleteImagesRequest(collection="odd-ids", ids=ODD_IDS[::2]))
    got = await stub.GetImages(pb.GetImagesRequest(collection="odd-ids", ids=ODD_IDS))
    assert sorted(i.id for i in got.images) == sorted(ODD_IDS[1::2])


@pytest.mark.parametrize("bad", ["line\nbreak", "nul\x00", "del\x7f", "nel\u0085", "csi\u009b",
                                 "ls\u2028", "ps\u2029", "a/b", "", "x" * 257])
async def test_ids_with_control_characters_or_a_slash_are_refused_per_item(search, bad):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="refused-ids"))
    (image,) = scene_images(1, seed=13)
    try:
        response = await stub.AddImages(pb.AddImagesRequest(collection="refused-ids", images=[
            pb.NewImage(id=bad, data=image[1]), pb.NewImage(id="fine", data=image[1])]))
        assert [r.code for r in response.results] == [grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                                      0]
        assert "external id" in response.results[0].message
    finally:
        await stub.DeleteCollection(pb.DeleteCollectionRequest(name="refused-ids"))
