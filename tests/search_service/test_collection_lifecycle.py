"""Creating and deleting collections while other calls race them: exactly one creation of a
name wins, and a collection created again under a deleted one's name starts empty, however
late the old one's writes land."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from pymilvus import MilvusClient

from imagesearch.search.v1 import search_pb2 as pb
from search_service.adapters.milvus import catalog
from search_service.adapters.milvus.config import is_lite
from search_service.adapters.milvus.schema import vectors_collection, vectors_schema
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
from search_service.errors import CollectionExists, CollectionNotFound
from tests.search_fixtures import scene_images

MODEL = ModelSpace("sha256:" + "ef" * 32, 8, "test-model")


def unit(rows: int) -> np.ndarray:
    vectors = np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def test_concurrent_creates_of_one_name_let_exactly_one_succeed(search):
    _, stub = search
    calls = [stub.CreateCollection(pb.CreateCollectionRequest(name="contested"))
             for _ in range(8)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, pb.CreateCollectionResponse)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1, outcomes
    assert len(lost) == 7
    assert {(e.code(), e.details()) for e in lost} == {
        (grpc.StatusCode.ALREADY_EXISTS, "collection 'contested' already exists")}


def test_concurrent_creates_through_two_stores_let_exactly_one_succeed(milvus_backend):
    """Two search-service replicas over one Milvus (on Lite: two clients of one file)."""
    uri = milvus_backend.new_uri()
    stores = [open_store(uri) for _ in range(2)]
    try:
        for round_ in range(3):
            name = f"raced-{round_}"

            def create(index: int, name: str = name) -> str:
                try:
                    return stores[index % 2].create_collection(name, MODEL).key
                except CollectionExists:
                    return ""

            with ThreadPoolExecutor(6) as pool:
                keys = [k for k in pool.map(create, range(6)) if k]
            assert len(keys) == 1, keys
            assert all(s.get_collection(name).key == keys[0] for s in stores)
    finally:
        for store in stores:
            store.close()


def test_a_space_its_creator_left_without_an_index_is_finished_not_fatal(milvus_backend,
                                                                        monkeypatch):
    """A replica that stopped between creating a space's collection and its index (or one
    still creating it, seen by another: the race a loaded CI run hit) left a collection that
    cannot be loaded. The next store waits for the index, then builds it itself."""
    monkeypatch.setattr(catalog, "_CREATOR_WAIT_S", 0.5)
    uri = milvus_backend.new_uri()
    first = open_store(uri)
    traits = first._catalog._traits
    first._client.create_collection(vectors_collection(MODEL),
                                    schema=vectors_schema(MODEL, traits.partition_key))
    first.close()
    store = open_store(uri)
    try:
        made = store.create_collection("half-made", MODEL)
        assert store.get_collection("half-made").key == made.key
    finally:
        store.close()


async def test_a_collection_deleted_during_adds_comes_back_empty(search):
    _, stub = search
    images = scene_images(48, seed=31)
    for round_ in range(3):
        await stub.CreateCollection(pb.CreateCollectionRequest(name="doomed"))

        async def add(part: int, round_: int = round_) -> str:
            try:
                await stub.AddImages(pb.AddImagesRequest(collection="doomed", images=[
                    pb.NewImage(id=f"{round_}-{part}-{i}", data=d)
                    for i, d, _ in images[part * 16:(part + 1) * 16]]))
            except grpc.aio.AioRpcError as err:
                return err.code().name
            return "OK"

        adds = [asyncio.ensure_future(add(part)) for part in range(3)]
        await asyncio.sleep(0.05 * round_)  # some adds read the record before the delete
        await stub.DeleteCollection(pb.DeleteCollectionRequest(name="doomed"))
        await stub.CreateCollection(pb.CreateCollectionRequest(name="doomed"))
        outcomes = await asyncio.gather(*adds)
        assert set(outcomes) <= {"OK", "NOT_FOUND"}
        # Every write that began before the deletion has landed or been refused by now.
        fresh = await stub.GetCollection(pb.GetCollectionRequest(name="doomed"))
        listed = await stub.ListImages(pb.ListImagesRequest(collection="doomed"))
        assert fresh.collection.image_count == 0, outcomes
        assert list(listed.images) == []
        await stub.DeleteCollection(pb.DeleteCollectionRequest(name="doomed"))


def test_a_late_write_to_a_deleted_collection_is_refused_and_swept(milvus_backend):
    store = open_store(milvus_backend.new_uri())
    try:
        old = store.create_collection("late", MODEL)
        store.delete_collection("late")
        new = store.create_collection("late", MODEL)
        assert new.key != old.key
        with pytest.raises(CollectionNotFound, match="was deleted while these images"):
            store.upsert(old, ["a", "b"], unit(2), [{}, {}])
        assert store.count(new) == 0
        assert store.get(new, ["a", "b"]) == []
        # A writer that died between its write and its clean-up leaves rows no one can see:
        # the sweep removes them once no write begun before the deletion can still land.
        # (On Lite, one that found the collection still there and made its partition again.)
        rows = vectors_collection(MODEL)
        layout = store._catalog.layout(rows)
        layout.prepare(store._client, rows, old, timeout_s=10)
        store._client.upsert(rows, [{"pk": f"{old.key}/x", "collection": old.key,
                                     "external_id": "x", "vector": unit(1)[0].tolist(),
                                     "metadata": {}, "updated_at_ms": 0}],
                             **layout.writes(old))
        assert store.sweep() == []  # too soon
        assert store.sweep(now_ms=2 ** 62) == [old.key]
        left = store._client.query(rows, filter=f'collection == "{old.key}"',
                                   output_fields=["pk"], consistency_level="Strong")
        assert left == []
        assert store.sweep(now_ms=2 ** 62) == []
    finally:
        store.close()


def test_collections_made_before_keys_keep_their_rows(milvus_backend):
    """A registry row without a key (written before keys existed) keys its rows by name."""
    uri = milvus_backend.new_uri()
    if is_lite(uri):  # a Lite file that old predates partitions too: one partition-key space
        old_file = MilvusClient(uri)
        params = old_file.prepare_index_params()
        params.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        old_file.create_collection(vectors_collection(MODEL), index_params=params,
                                   schema=vectors_schema(MODEL, partition_key=True))
    store = open_store(uri)
    try:
        made = store.create_collection("legacy", MODEL)
        store.upsert(made, ["a"], unit(1), [{}])
        store._client.upsert("imagesearch_collections", [{
            "name": "old", "placeholder": [1.0, 0.0],
            "info": {"fingerprint": MODEL.fingerprint, "dimension": 8,
                     "model_name": MODEL.model_name, "description": "", "created_at_ms": 1}}])
        rows = vectors_collection(MODEL)
        store._client.upsert(rows, [{"pk": "old/kept", "collection": "old",
                                     "external_id": "kept", "vector": unit(1)[0].tolist(),
                                     "metadata": {"k": 1}, "updated_at_ms": 0}])
        old = store.get_collection("old")
        assert old.key == "old"
        assert [i.external_id for i in store.get(old, ["kept"])] == ["kept"]
        assert store.count(old) == 1
        assert [c.name for c in store.list_collections(10)] == ["legacy", "old"]
    finally:
        store.close()
