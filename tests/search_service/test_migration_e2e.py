"""A collection moved between two real models under load, on Milvus Lite and on a Milvus
server: the embedder serves the bundled model and a second one made by the repo's scripts,
and the search service copies the collection from one to the other while a client searches,
adds and deletes without pause. The invariants, checked on every call: no call fails, no
image is lost or comes back, and no result mixes the two spaces (every image query finds its
own image first, at a similarity only its own model gives)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL
from imagesearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service.server import SearchServer
from tests.conftest import embedder_settings
from tests.search_fixtures import add, scene_images, search_settings

SECOND_MODEL = BUNDLED_MODEL.parent / "synthetic-clip-wide"
MIGRATING = {"migration_poll_s": 0.2, "migration_lease_s": 2.0, "migration_settle_s": 1.0}


@pytest_asyncio.fixture(scope="module")
async def two_models() -> AsyncIterator[EmbedderServer]:
    server = EmbedderServer(embedder_settings(extra_bundles=[SECOND_MODEL]))
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest_asyncio.fixture(scope="module")
async def models(two_models) -> tuple[embedder_pb2.ModelInfo, embedder_pb2.ModelInfo]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{two_models.port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        for _ in range(300):  # the second model loads after the port opens
            info = await stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())
            if len(info.models) == 2 and all(m.ready for m in info.models):
                return info.models[0], info.models[1]
            await asyncio.sleep(0.1)
    raise AssertionError("the second model never became ready")


@pytest_asyncio.fixture
async def service(two_models, milvus_backend, tmp_path):
    settings = search_settings(milvus_backend.new_uri(), two_models.port,
                               image_store=str(tmp_path / "images"), **MIGRATING)
    server = SearchServer(settings)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, search_pb2_grpc.SearchServiceStub(channel), settings
    await channel.close()
    await server.stop(grace=0)


async def wait_for(stub, collection: str, *states: int, timeout_s: float = 120.0
                   ) -> pb.Migration:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        migration = (await stub.GetMigration(pb.GetMigrationRequest(
            collection=collection))).migration
        if migration.state in states:
            return migration
        assert migration.state != pb.Migration.STATE_FAILED, migration.error
        assert asyncio.get_running_loop().time() < deadline, migration
        await asyncio.sleep(0.1)


class Load:
    """Searches, adds and deletes without pause, checking every answer."""

    def __init__(self, stub, collection: str, present: dict[str, bytes], seed: int) -> None:
        self.stub, self.collection, self.present = stub, collection, present
        self.rng = random.Random(seed)
        self.fresh = iter(scene_images(400, seed=seed + 1))
        self.calls = self.failures = 0
        self.spaces: set[int] = set()
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        while not self.stopped.is_set():
            await self.step()

    async def step(self) -> None:
        action = self.rng.random()
        self.calls += 1
        if action < 0.25:
            image_id, data, scene = next(self.fresh)
            image_id = "new-" + image_id
            response = await add(self.stub, self.collection, [(image_id, data, scene)])
            assert response.results[0].code == 0, response.results[0].message
            self.present[image_id] = data
        elif action < 0.35 and len(self.present) > 10:
            image_id = self.rng.choice(sorted(self.present))
            del self.present[image_id]
            await self.stub.DeleteImages(pb.DeleteImagesRequest(collection=self.collection,
                                                                ids=[image_id]))
        else:
            image_id = self.rng.choice(sorted(self.present))
            found = await self.stub.Search(pb.SearchRequest(
                collection=self.collection, top_k=5, queries=[
                    pb.Query(image=self.present[image_id]), pb.Query(text="a red circle")]))
            by_image, by_text = found.results
            # Its own image first: a query of one model against the other's vectors would
            # find it at no better than chance.
            assert by_image.hits[0].id == image_id, (image_id, by_image.hits[:3])
            assert by_image.hits[0].similarity > 0.97, by_image.hits[0]
            assert len(by_text.hits) == 5
            assert {h.id for h in [*by_image.hits, *by_text.hits]} <= set(self.present) | {
                image_id}


async def test_a_collection_moves_to_the_second_model_under_load(service, models):
    _, stub, _ = service
    first, second = models
    await stub.CreateCollection(pb.CreateCollectionRequest(name="moving", model=first.model_name))
    items = scene_images(120, seed=5)
    assert all(r.code == 0 for r in (await add(stub, "moving", items)).results)
    present = {image_id: data for image_id, data, _ in items}

    # An evaluation call that ranks the two models on the collection's own labels.
    report = await stub.EvaluateModels(pb.EvaluateModelsRequest(collection="moving",
                                                                label_key="shape"))
    assert {e.model.fingerprint for e in report.evaluations} == {first.fingerprint,
                                                                 second.fingerprint}
    assert [e.knn_accuracy for e in report.evaluations] == sorted(
        (e.knn_accuracy for e in report.evaluations), reverse=True)
    assert all(e.images == 120 and 0 < e.recall_at_1 <= 1 for e in report.evaluations)

    load = Load(stub, "moving", present, seed=7)
    running = asyncio.ensure_future(load.run())
    started = await stub.StartMigration(pb.StartMigrationRequest(
        collection="moving", model=second.model_name))
    assert started.migration.state == pb.Migration.STATE_COPYING
    switched = await wait_for(stub, "moving", pb.Migration.STATE_SWITCHED)
    load.stopped.set()
    await running
    # Some load after the switch too, while the old model's vectors are kept current.
    for _ in range(20):
        await load.step()
    assert switched.images_copied >= 120 and switched.images_skipped == 0
    collection = (await stub.GetCollection(pb.GetCollectionRequest(name="moving"))).collection
    assert (collection.model.fingerprint, collection.model.dimension) == (
        second.fingerprint, second.embedding_dim)
    assert collection.migration.state == pb.Migration.STATE_SWITCHED
    await assert_holds_exactly(stub, "moving", present, second)

    finished = await stub.FinishMigration(pb.FinishMigrationRequest(collection="moving"))
    assert finished.migration.state == pb.Migration.STATE_FINISHED
    await Load(stub, "moving", present, seed=9).step()
    await assert_holds_exactly(stub, "moving", present, second)


async def assert_holds_exactly(stub, collection: str, present: dict[str, bytes],
                               model: embedder_pb2.ModelInfo) -> None:
    """Every image that should be there and no other, each with a vector of `model`."""
    listed, token = [], ""
    while True:
        page = await stub.ListImages(pb.ListImagesRequest(collection=collection,
                                                          page_token=token, page_size=100))
        listed += [i.id for i in page.images]
        if not (token := page.next_page_token):
            break
    assert sorted(listed) == sorted(present)
    got = await stub.GetImages(pb.GetImagesRequest(collection=collection,
                                                   ids=sorted(present)[:20],
                                                   include_vectors=True))
    assert {len(i.vector) for i in got.images} == {model.embedding_dim}
    assert all(abs(np.linalg.norm(i.vector) - 1) < 1e-3 for i in got.images)


async def test_a_rollback_returns_to_the_first_model_with_every_write(service, models):
    _, stub, _ = service
    first, second = models
    await stub.CreateCollection(pb.CreateCollectionRequest(name="back"))
    items = scene_images(30, seed=11)
    await add(stub, "back", items)
    present = {image_id: data for image_id, data, _ in items}
    await stub.StartMigration(pb.StartMigrationRequest(collection="back",
                                                       model=second.fingerprint))
    await wait_for(stub, "back", pb.Migration.STATE_SWITCHED)
    load = Load(stub, "back", present, seed=13)
    for _ in range(30):
        await load.step()
    rolled = await stub.RollbackMigration(pb.RollbackMigrationRequest(collection="back"))
    assert rolled.migration.state == pb.Migration.STATE_ROLLED_BACK
    collection = (await stub.GetCollection(pb.GetCollectionRequest(name="back"))).collection
    assert collection.model.fingerprint == first.fingerprint
    assert not collection.HasField("migration")
    for _ in range(10):
        await load.step()
    await assert_holds_exactly(stub, "back", present, first)


async def test_a_restarted_service_finishes_the_copy(service, models, two_models):
    server, stub, settings = service
    _, second = models
    await stub.CreateCollection(pb.CreateCollectionRequest(name="restarted"))
    items = scene_images(150, seed=17)
    await add(stub, "restarted", items)
    await stub.StartMigration(pb.StartMigrationRequest(collection="restarted",
                                                       model=second.model_name,
                                                       switch_when_copied=False))
    for _ in range(3000):
        progress = (await stub.GetMigration(pb.GetMigrationRequest(
            collection="restarted"))).migration
        if progress.images_copied:
            break
        await asyncio.sleep(0.02)
    await server.stop(grace=0)  # mid-copy
    again = SearchServer(settings)
    await again.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            copied = await wait_for(stub, "restarted", pb.Migration.STATE_COPIED)
            assert copied.images_copied >= 150 - 64 and copied.images_skipped == 0
            switched = await stub.SwitchMigration(pb.SwitchMigrationRequest(
                collection="restarted"))
            assert switched.migration.state == pb.Migration.STATE_SWITCHED
            await assert_holds_exactly(stub, "restarted", {i: d for i, d, _ in items}, second)
    finally:
        await again.stop(grace=0)


async def test_bad_migration_calls_get_clear_statuses(service, models):
    _, stub, _ = service
    first, _ = models
    await stub.CreateCollection(pb.CreateCollectionRequest(name="plain"))
    cases = [
        (stub.StartMigration(pb.StartMigrationRequest(collection="plain", model="nope")),
         grpc.StatusCode.NOT_FOUND, "not served"),
        (stub.StartMigration(pb.StartMigrationRequest(collection="plain",
                                                      model=first.model_name)),
         grpc.StatusCode.INVALID_ARGUMENT, "already uses model"),
        (stub.GetMigration(pb.GetMigrationRequest(collection="plain")),
         grpc.StatusCode.NOT_FOUND, "never had a migration"),
        (stub.RollbackMigration(pb.RollbackMigrationRequest(collection="plain")),
         grpc.StatusCode.NOT_FOUND, "no migration"),
        (stub.StartMigration(pb.StartMigrationRequest(collection="missing", model="x")),
         grpc.StatusCode.NOT_FOUND, "not served"),
        (stub.CreateCollection(pb.CreateCollectionRequest(name="other", model="nope")),
         grpc.StatusCode.NOT_FOUND, "not served"),
        (stub.EvaluateModels(pb.EvaluateModelsRequest(collection="plain", label_key="shape")),
         grpc.StatusCode.FAILED_PRECONDITION, "at least two labels"),
    ]
    for call, code, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == code, (caught.value.details(), code)
        assert words in caught.value.details()
