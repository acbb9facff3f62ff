"""A short run of the fault harness (tests/faults/harness.py): one trial per kind of fault,
on Milvus Lite and on the Milvus server. The long run is `make faults`; its result is in
bench/RESULTS.md."""

from __future__ import annotations

import logging

import pytest

from tests.faults.harness import FAULTS, Harness
from tests.faults.processes import Stack
from tests.search_fixtures import scene_images

pytestmark = pytest.mark.slow
# Lite runs in the search service's process: killing that kills Lite too.
KINDS = {"lite": [f for f in FAULTS if "milvus" not in f],
         "server": ["kill-milvus", "freeze-milvus", "kill-search"]}


@pytest.fixture(scope="module")
def harness(milvus_backend, tmp_path_factory):
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    milvus = milvus_backend.server
    stack = Stack(tmp_path_factory.mktemp(f"faults-{milvus_backend.kind}"),
                  milvus_backend.kind, milvus,
                  database=milvus_backend.new_uri().rsplit("/", 1)[1] if milvus else "")
    stack.start()
    images = [data for _, data, _ in scene_images(40, seed=7)]
    harness = Harness(stack, images, seed=7)
    harness.prepare()
    yield harness
    harness.close()
    stack.close()


@pytest.mark.parametrize("kind", sorted({k for kinds in KINDS.values() for k in kinds}))
def test_no_fault_loses_duplicates_hangs_or_crosses_tenants(harness, kind, request):
    if kind not in KINDS[harness.stack.backend]:
        pytest.skip(f"{kind} is not a fault of {harness.stack.backend}")
    outcome = harness.trial(request.node.callspec.indices["kind"], kind)
    assert outcome.ok, outcome
    assert outcome.acknowledged == outcome.images
