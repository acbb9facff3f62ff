"""A migration between two models survives any of its processes killed or frozen mid-way:
the embedder (serving both models), the search service (which runs the copy), or the Milvus
server. At a seeded random moment of each copy, while images keep streaming in, one process
is struck and brought back; afterwards the collection has switched to the second model and
holds exactly the images sent, each once, with the second model's vectors."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from embedder_service.settings import BUNDLED_MODEL
from imagesearch.client import SearchClient
from imagesearch.search.v1 import search_pb2 as pb
from tests.faults.processes import Stack
from tests.search_fixtures import scene_images

pytestmark = pytest.mark.slow
SECOND_MODEL = BUNDLED_MODEL.parent / "synthetic-clip-wide"
FAULTS = {"lite": ["kill-search", "kill-embedder", "freeze-embedder"],
          "server": ["kill-search", "kill-milvus"]}


@pytest.fixture(scope="module")
def stack(milvus_backend, tmp_path_factory):
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    milvus = milvus_backend.server
    stack = Stack(tmp_path_factory.mktemp(f"migration-faults-{milvus_backend.kind}"),
                  milvus_backend.kind, milvus,
                  database=milvus_backend.new_uri().rsplit("/", 1)[1] if milvus else "",
                  embedder_env={"EMBEDDER_EXTRA_BUNDLES": str(SECOND_MODEL)},
                  search_env={"SEARCH_IMAGE_STORE": str(tmp_path_factory.mktemp("images")),
                              "SEARCH_MIGRATION_POLL_S": "0.3",
                              "SEARCH_MIGRATION_LEASE_S": "2",
                              "SEARCH_MIGRATION_SETTLE_S": "12"})
    stack.start()
    yield stack
    stack.close()


def strike(stack: Stack, fault: str, down_s: float) -> None:
    kind, target = fault.split("-")
    if target == "milvus":
        assert stack.milvus is not None
        stack.milvus.kill()
        time.sleep(down_s)
        stack.milvus.start()
    else:
        service = stack.embedder if target == "embedder" else stack.search
        if kind == "kill":
            service.kill()
            time.sleep(down_s)
            service.start(wait_s=None)
        else:
            service.freeze()
            time.sleep(down_s)
            service.thaw()
    stack.embedder.wait_serving(120)
    stack.search.wait_serving(180)


def migration(client: SearchClient, collection: str, until_s: float) -> pb.Migration:
    """The migration's state, through restarts (retried until `until_s`)."""
    while True:
        try:
            return client.get_migration(collection)
        except Exception:
            if time.monotonic() > until_s:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("fault", sorted({f for faults in FAULTS.values() for f in faults}))
def test_a_migration_survives_a_struck_process(stack, fault):
    if fault not in FAULTS[stack.backend]:
        pytest.skip(f"{fault} is not a fault of {stack.backend}")
    rng = random.Random(f"{stack.backend}-{fault}")
    collection = f"move-{fault}"
    images = scene_images(160, seed=rng.randrange(1000))
    with SearchClient(stack.search.address, 20.0) as client:
        models = client.list_models()
        while not all(m.ready for m in models) or len(models) < 2:
            time.sleep(0.2)
            models = client.list_models()
        second = models[1].model
        client.create_collection(collection)
        first = [(i, d, {"i": n}) for n, (i, d, _) in enumerate(images[:120])]
        assert not client.ingest(collection, first)
        client.start_migration(collection, second.name)
        later = [(f"later-{i}", d, {"i": n}) for n, (i, d, _) in enumerate(images[120:])]
        streamed: list[object] = []
        writer = threading.Thread(target=lambda: streamed.extend(
            client.ingest(collection, later)), daemon=True)
        writer.start()
        time.sleep(rng.uniform(0.2, 2.0))
        strike(stack, fault, rng.uniform(0.5, 2.5))
        writer.join(120)
        assert not writer.is_alive() and not streamed, streamed  # every image acknowledged
        deadline = time.monotonic() + 180
        while (state := migration(client, collection, deadline)).state in (
                pb.Migration.STATE_COPYING,):
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        assert state.state == pb.Migration.STATE_SWITCHED, state
        assert state.images_skipped == 0
        stored = list(client.list_images(collection, page_size=500))
        ids = [i.id for i in stored]
        assert sorted(ids) == sorted([i for i, _, _ in first] + [i for i, _, _ in later])
        got = client._call("GetImages", pb.GetImagesRequest(
            collection=collection, ids=ids[:50], include_vectors=True)).images
        assert {len(i.vector) for i in got} == {second.dimension}
        info = client.get_collection(collection)
        assert info.model.fingerprint == second.fingerprint
