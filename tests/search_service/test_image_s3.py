"""The image store on S3-compatible object storage, against a real S3 server on loopback
(moto's, through boto3 as in production), and the search service over a Milvus server with it:
what every replica shares, so copy detection works beside a Milvus server too."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
import pytest_asyncio
from moto.server import ThreadedMotoServer
from pymilvus import MilvusClient

from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service import copy_index, copy_store
from search_service.adapters.image_folder import FolderImageStore
from search_service.adapters.image_s3 import S3ImageStore
from search_service.errors import ImageStoreUnavailable
from search_service.ports import ImageStore
from search_service.server import SearchServer
from tests.conftest import encode
from tests.milvus_server import free_port
from tests.search_fixtures import search_settings

HOSTILE_IDS = ["a/b", "a:b", "../../etc/passwd", "..", ".", "a\\b", "é", "x" * 2000, "?x=1#y"]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pod gets from its Secret; nothing from this machine's own AWS setup."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


_buckets = iter(range(10**6))


def new_bucket(endpoint: str) -> str:
    name = f"images-{os.getpid()}-{next(_buckets)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


@pytest_asyncio.fixture(params=["folder", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ImageStore]:
    """Each adapter of the port, to hold both to one contract."""
    if request.param == "folder":
        made: ImageStore = FolderImageStore(tmp_path)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        made = S3ImageStore(f"s3://{new_bucket(endpoint)}/tenant-data", endpoint)
    yield made
    await made.close()


async def test_kinds_collections_and_ids_stay_apart(store: ImageStore) -> None:
    await store.put("k1", "copy", [(i, i.encode()) for i in HOSTILE_IDS])
    await store.put("k1", "thumb", [("a/b", b"thumb")])
    await store.put("k2", "copy", [("a/b", b"other tenant")])
    assert await store.get("k1", "copy", [*HOSTILE_IDS, "missing"]) == {
        i: i.encode() for i in HOSTILE_IDS}
    assert await store.get("k2", "copy", ["a/b", "a:b"]) == {"a/b": b"other tenant"}
    await store.delete("k1", ["a/b"])
    assert await store.get("k1", "thumb", ["a/b"]) == {}
    assert "a/b" not in await store.get("k1", "copy", ["a/b"])
    await store.delete_collection("k1")
    assert await store.get("k1", "copy", HOSTILE_IDS) == {}
    assert await store.get("k2", "copy", ["a/b"]) == {"a/b": b"other tenant"}
    await store.delete_collection("never-made")
    await store.delete("never-made", ["x"])
    await store.delete("k2", [])


async def test_a_put_replaces_and_concurrent_puts_leave_one_whole_value(
        store: ImageStore) -> None:
    await store.put("k", "copy", [("same", b"first")])
    await store.put("k", "copy", [("same", b"second")])
    assert await store.get("k", "copy", ["same"]) == {"same": b"second"}
    values = [bytes([n]) * 100_000 for n in range(16)]
    await asyncio.gather(*(store.put("k", "copy", [("same", v)]) for v in values))
    assert (await store.get("k", "copy", ["same"]))["same"] in values
    await store.check()


async def test_a_large_collection_is_deleted_whole(s3_endpoint: str) -> None:
    """More objects than one listing page and one DeleteObjects request take (1000)."""
    bucket = new_bucket(s3_endpoint)
    store = S3ImageStore(f"s3://{bucket}", s3_endpoint, threads=32)
    ids = [f"img-{n}" for n in range(1100)]
    await store.put("big", "copy", [(i, b"s") for i in ids])
    await store.put("big", "thumb", [(i, b"t") for i in ids[:10]])
    await store.put("kept", "copy", [("img-1", b"k")])
    await store.delete_collection("big")
    assert _keys(s3_endpoint, bucket) == _keys(s3_endpoint, bucket, "")[:1]
    assert await store.get("kept", "copy", ["img-1"]) == {"img-1": b"k"}
    await store.close()


async def test_keys_are_digests_under_the_prefix_never_a_callers_name(s3_endpoint: str) -> None:
    bucket = new_bucket(s3_endpoint)
    store = S3ImageStore(f"s3://{bucket}/one/two/", s3_endpoint)
    await store.put("key", "copy", [(i, b"x") for i in HOSTILE_IDS])
    for key in _keys(s3_endpoint, bucket, ""):
        prefix, collection, kind, name = key.rsplit("/", 3)
        assert (prefix, kind) == ("one/two", "copy")
        assert all(c in "0123456789abcdef" for c in collection + name)
    await store.close()


async def test_a_missing_bucket_or_a_dead_endpoint_is_unavailable_with_the_reason(
        s3_endpoint: str) -> None:
    missing = S3ImageStore("s3://no-such-bucket", s3_endpoint)
    with pytest.raises(ImageStoreUnavailable, match=r"failed \(NoSuchBucket\); retry shortly"):
        await missing.put("k", "copy", [("a", b"x")])
    with pytest.raises(ImageStoreUnavailable, match=r"\(404\)"):
        await missing.check()
    await missing.close()
    dead = S3ImageStore("s3://some-bucket", f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(ImageStoreUnavailable, match=r"\(EndpointConnectionError\)"):
        await dead.get("k", "copy", ["a"])
    await dead.close()


def _keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix)
    return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))


async def test_copies_are_found_beside_a_milvus_server_through_the_object_store(
        milvus_server: Any, embedder_server: Any, s3_endpoint: str, photos: dict) -> None:
    """Two search service replicas over one Milvus server and one bucket: what one stored,
    the other verifies; deleting the collection deletes its objects."""
    bucket = new_bucket(s3_endpoint)
    uri = f"{milvus_server.uri}/default"
    replicas = [SearchServer(search_settings(uri, embedder_server.port,
                                             image_store=f"s3://{bucket}/search",
                                             image_store_endpoint=s3_endpoint))
                for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        one, two = (grpc.aio.insecure_channel(f"127.0.0.1:{r.port}") for r in replicas)
        first, second = (search_pb2_grpc.SearchServiceStub(c) for c in (one, two))
        name = f"s3-{os.getpid()}"
        await first.CreateCollection(pb.CreateCollectionRequest(name=name))
        coffee = photos["coffee"]
        framed = coffee.crop((20, 20, coffee.width - 20, coffee.height - 20))
        added = await first.AddImages(pb.AddImagesRequest(collection=name, images=[
            pb.NewImage(id=n, data=encode(p, "JPEG", quality=90)) for n, p in photos.items()]))
        assert [r.code for r in added.results] == [0] * len(photos)
        found = await second.FindDuplicates(pb.FindDuplicatesRequest(
            collection=name, query=pb.Query(image=encode(framed, "JPEG", quality=60)),
            max_results=5))
        assert found.mode == pb.DUPLICATE_MODE_COPIES
        assert [(h.id, h.match) for h in found.duplicates] == [("coffee", pb.MATCH_KIND_COPY)]
        assert _keys(s3_endpoint, bucket)
        await second.DeleteCollection(pb.DeleteCollectionRequest(name=name))
        assert _keys(s3_endpoint, bucket) == []
        await one.close()
        await two.close()
    finally:
        for replica in replicas:
            await replica.stop(grace=0)


async def test_moving_from_lite_to_a_server_carries_copy_detection(
        milvus_server: Any, embedder_server: Any, s3_endpoint: str, photos: dict,
        tmp_path: Path) -> None:
    """copy_store from the embedded default to a Milvus server and a bucket: the copy signals
    come along and the copy index is rebuilt, so copies stay verified, not merely similar."""
    lite = str(tmp_path / "search.db")
    embedded = SearchServer(search_settings(lite, embedder_server.port))
    await embedded.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{embedded.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="moved"))
            await stub.AddImages(pb.AddImagesRequest(collection="moved", images=[
                pb.NewImage(id=n, data=encode(p, "JPEG", quality=90))
                for n, p in photos.items()]))
    finally:
        await embedded.stop(grace=0)
    database = f"moved_{os.getpid()}"
    MilvusClient(milvus_server.uri).create_database(database)
    target = f"{milvus_server.uri}/{database}"
    # The command, as from a shell (it runs an event loop of its own).
    with pytest.raises(SystemExit, match="pass --images-to"):
        await asyncio.to_thread(copy_store.main, ["--from", lite, "--to", target])
    bucket = new_bucket(s3_endpoint)
    assert await asyncio.to_thread(copy_store.main, [
        "--from", lite, "--to", target, "--images-to", f"s3://{bucket}",
        "--images-endpoint", s3_endpoint]) == 0
    server = SearchServer(search_settings(target, embedder_server.port,
                                          image_store=f"s3://{bucket}",
                                          image_store_endpoint=s3_endpoint))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            rocket = photos["rocket"]
            query = encode(rocket.resize((rocket.width // 2, rocket.height // 2)), "JPEG")
            found = await stub.FindDuplicates(pb.FindDuplicatesRequest(
                collection="moved", query=pb.Query(image=query), max_results=5))
            assert (found.mode, found.unverified) == (pb.DUPLICATE_MODE_COPIES, 0)
            assert [(h.id, h.match) for h in found.duplicates] == [("rocket",
                                                                     pb.MATCH_KIND_COPY)]
    finally:
        await server.stop(grace=0)
    # The index rows came along too: one per image, in the target's copy index.
    copied = copy_store.open_store(target)
    record = copied.get_collection("moved")
    assert copied.count(copy_index.of(record)) == len(photos)
    copied.close()


async def test_credentials_come_from_a_file_where_the_environment_has_none(
        s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = new_bucket(s3_endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    without = S3ImageStore(f"s3://{bucket}", s3_endpoint)
    with pytest.raises(ImageStoreUnavailable, match=r"\(NoCredentialsError\)"):
        await without.check()
    await without.close()
    secret = tmp_path / "credentials"
    secret.write_text("[default]\naws_access_key_id = from-file\n"
                      "aws_secret_access_key = secret-from-file\n")
    store = S3ImageStore(f"s3://{bucket}", s3_endpoint, credentials_file=secret)
    await store.put("k", "copy", [("a", b"x")])
    assert await store.get("k", "copy", ["a"]) == {"a": b"x"}
    await store.close()
