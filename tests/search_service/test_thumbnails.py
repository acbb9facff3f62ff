"""Thumbnails: made by the embedder from the decode that embeds each image, kept in the image
store, served by GetThumbnails (and its HTTP route), gone with their images. The real
services on Milvus Lite; the core on fakes for an embedder that makes none."""

from __future__ import annotations

import base64
import io
from typing import Any

import aiohttp
import grpc
import pytest
from PIL import Image

from imagesearch.errors import FailedPrecondition
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.core import THUMBNAIL_SIDE, SearchCore
from search_service.domain import NewImage
from search_service.server import SearchServer
from tests.conftest import encode
from tests.search_fixtures import search_settings
from tests.search_service.fakes import FakeEmbedder, FakeStore, MemoryImages


async def test_thumbnails_are_kept_served_and_deleted_with_their_images(
        embedder_server: Any, tmp_path: Any, photos: dict[str, Image.Image]) -> None:
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="shown"))
            wide = photos["coffee"]  # 600 x 400
            await stub.AddImages(pb.AddImagesRequest(collection="shown", images=[
                pb.NewImage(id="coffee", data=encode(wide, "JPEG")),
                pb.NewImage(id="a:b", data=encode(photos["camera"])),
                pb.NewImage(id="broken", data=b"not an image")]))
            got = await stub.GetThumbnails(pb.GetThumbnailsRequest(
                collection="shown", ids=["a:b", "nope", "coffee", "broken"]))
            assert [t.id for t in got.thumbnails] == ["a:b", "coffee"]
            assert list(got.missing_ids) == ["nope", "broken"]
            coffee = Image.open(io.BytesIO(got.thumbnails[1].jpeg))
            assert (coffee.format, coffee.size) == ("JPEG", (THUMBNAIL_SIDE, 171))
            async with aiohttp.ClientSession(
                    f"http://127.0.0.1:{server.http_port}") as http, http.post(
                    "/v1/collections/shown/images:thumbnails", json={"ids": ["coffee"]}
                    ) as response:
                body = await response.json()
            assert base64.b64decode(body["thumbnails"][0]["jpeg"]) == got.thumbnails[1].jpeg
            await stub.DeleteImages(pb.DeleteImagesRequest(collection="shown", ids=["coffee"]))
            after = await stub.GetThumbnails(pb.GetThumbnailsRequest(
                collection="shown", ids=["coffee", "a:b"]))
            assert ([t.id for t in after.thumbnails], list(after.missing_ids)) == (
                ["a:b"], ["coffee"])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetThumbnails(pb.GetThumbnailsRequest(collection="nowhere",
                                                                 ids=["a"]))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetThumbnails(pb.GetThumbnailsRequest(collection="shown"))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(grace=0)


async def test_an_image_added_again_by_an_embedder_without_thumbnails_loses_its_old_one(
        ) -> None:
    images = MemoryImages()
    core = SearchCore(FakeStore(), FakeEmbedder(), images=images)
    await core.create_collection("c", "")
    record = await core.collection("c")
    await images.put(record.key, "thumb", [("a", b"old pixels")])
    await core.add_images("c", [NewImage("a", b"new pixels" * 10, {})])
    assert await core.get_thumbnails("c", ["a"]) == ({}, ["a"])


async def test_thumbnails_without_an_image_store_are_a_precondition() -> None:
    core = SearchCore(FakeStore(), FakeEmbedder())
    await core.create_collection("c", "")
    with pytest.raises(FailedPrecondition, match="SEARCH_IMAGE_STORE is off"):
        await core.get_thumbnails("c", ["a"])


async def test_the_sweep_removes_what_late_writes_left_in_the_image_store() -> None:
    """Images added while their collection was being deleted leave records under its old key;
    the sweep that removes such rows removes them too."""
    images = MemoryImages()

    class Tombstoned(FakeStore):
        async def sweep(self) -> list[str]:
            return ["~gone"]

    core = SearchCore(Tombstoned(), FakeEmbedder(), images=images)
    await images.put("~gone", "thumb", [("late", b"jpeg")])
    await images.put("~kept", "thumb", [("a", b"jpeg")])
    assert await core.sweep() == ["~gone"]
    assert list(images.kinds) == [("~kept", "thumb", "a")]
