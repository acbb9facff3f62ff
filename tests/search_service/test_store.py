"""The Milvus store against real Milvus Lite and a real Milvus server: isolation, upsert,
pagination, filters, restart."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from search_service.adapters.milvus.config import ServerTraits, check_server_version
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import Condition, ModelSpace, Op
from search_service.errors import CollectionExists, CollectionNotFound, InvalidFilter

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelSpace("sha256:" + "ab" * 32, 8, "test-model")
OTHER_MODEL = ModelSpace("sha256:" + "cd" * 32, 4, "other-model")


@pytest.fixture(scope="module")
def module_store(milvus_backend):
    opened = open_store(milvus_backend.new_uri())
    yield opened
    opened.close()


@pytest.fixture
def store(module_store):
    """An empty store: one Milvus database per module (creating Milvus collections is what
    takes time on a server), emptied after each test."""
    yield module_store
    while collections := module_store.list_collections(100):
        for collection in collections:
            module_store.delete_collection(collection.name)


def unit(rows: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_collections_are_created_listed_and_deleted(store):
    store.create_collection("cats", MODEL, "my cats")
    store.create_collection("dogs", MODEL)
    assert store.get_collection("cats").description == "my cats"
    assert store.get_collection("cats").model == MODEL
    with pytest.raises(CollectionExists, match="collection 'cats' already exists"):
        store.create_collection("cats", MODEL)
    assert [c.name for c in store.list_collections(10)] == ["cats", "dogs"]
    assert [c.name for c in store.list_collections(10, after="cats")] == ["dogs"]
    store.delete_collection("cats")
    with pytest.raises(CollectionNotFound, match="collection 'cats' does not exist"):
        store.get_collection("cats")


def test_readding_an_id_replaces_it(store):
    cats = store.create_collection("cats", MODEL)
    vectors = unit(3)
    store.upsert(cats, ["a", "b", "c"], vectors, [{"v": 1}, {"v": 1}, {"v": 1}])
    store.upsert(cats, ["b"], vectors[2:], [{"v": 2}])
    assert store.count(cats) == 3
    (b,) = store.get(cats, ["b"], with_vectors=True)
    assert b.metadata == {"v": 2}
    np.testing.assert_allclose(b.vector, vectors[2], atol=1e-6)


def test_search_sees_a_write_at_once_and_only_its_own_collection(store):
    cats = store.create_collection("cats", MODEL)
    dogs = store.create_collection("dogs", MODEL)
    vectors = unit(4)
    store.upsert(cats, ["c1", "c2"], vectors[:2], [{}, {}])
    store.upsert(dogs, ["d1", "d2"], vectors[2:], [{}, {}])
    (hits,) = store.search(dogs, vectors[:1], top_k=10)
    assert {h.external_id for h in hits} == {"d1", "d2"}
    (hits,) = store.search(cats, vectors[:1], top_k=1)
    assert hits[0].external_id == "c1" and hits[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_pagination_walks_every_item_exactly_once(store):
    cats = store.create_collection("cats", MODEL)
    ids = [f"img-{i:04d}" for i in np.random.default_rng(1).permutation(250)]
    for start in range(0, 250, 60):
        chunk = ids[start:start + 60]
        store.upsert(cats, chunk, unit(len(chunk), seed=start), [{} for _ in chunk])
    store.delete(cats, ["img-0007"])
    seen: list[str] = []
    after = ""
    while page := store.list_images(cats, 32, after):
        seen += [image.external_id for image in page]
        after = page[-1].external_id
    assert seen == sorted(set(ids) - {"img-0007"})


def test_listings_right_after_writes_see_them(store):
    # On a server, ordered paging reads without a session timestamp unless the store waits
    # for one: every fresh write was missing from the next page on Milvus 2.3.5.
    for round_ in range(5):
        cats = store.create_collection(f"cats-{round_}", MODEL)
        assert f"cats-{round_}" in [c.name for c in store.list_collections(100)]
        store.upsert(cats, ["a"], unit(1), [{}])
        assert [image.external_id for image in store.list_images(cats, 10)] == ["a"]
        store.delete(cats, ["a"])
        assert store.list_images(cats, 10) == []


def test_filters_select_by_metadata(store):
    cats = store.create_collection("cats", MODEL)
    labels = ["tabby", "black", "tabby", 'say "hi" \\ o/']
    ages = [1, 5, 9, 3]
    store.upsert(cats, ["a", "b", "c", "d"], unit(4),
                 [{"label": label, "age": age} for label, age in zip(labels, ages, strict=True)])
    query = unit(1, seed=9)

    def found(*conditions: Condition) -> set[str]:
        (hits,) = store.search(cats, query, top_k=10, conditions=conditions)
        return {h.external_id for h in hits}

    assert found(Condition("label", Op.EQ, ("tabby",))) == {"a", "c"}
    assert found(Condition("label", Op.IN, ("black", 'say "hi" \\ o/'))) == {"b", "d"}
    assert found(Condition("age", Op.GTE, (3,)), Condition("age", Op.LT, (9,))) == {"b", "d"}
    assert found(Condition("missing", Op.EXISTS)) == set()


@pytest.mark.parametrize("value", [
    'x" or collection != "cats', "x') or (1 == 1", 'tabby" || collection == "dogs',
    "\\\" or true or \\\"",
])
def test_filter_values_cannot_escape_the_collection(store, value):
    cats = store.create_collection("cats", MODEL)
    dogs = store.create_collection("dogs", MODEL)
    store.upsert(cats, ["c"], unit(1), [{"label": "tabby"}])
    store.upsert(dogs, ["d"], unit(1, seed=1), [{"label": "tabby"}])
    (hits,) = store.search(cats, unit(1), top_k=10,
                           conditions=(Condition("label", Op.EQ, (value,)),))
    assert hits == []


@pytest.mark.parametrize(("condition", "message"), [
    (Condition('label"] or collection != ["x', Op.EQ, ("a",)), "metadata key"),
    (Condition("label", Op.EQ, ("line\nbreak",)), "control characters"),
    (Condition("age", Op.GT, ("abc",)), "ranges compare numbers only"),
    (Condition("age", Op.IN, ()), "give 1 to 256 values"),
    (Condition("age", Op.EQ, (float("nan"),)), "finite numbers"),
])
def test_malformed_conditions_are_refused(store, condition, message):
    cats = store.create_collection("cats", MODEL)
    with pytest.raises(Exception, match=message) as caught:
        store.search(cats, unit(1), top_k=1, conditions=(condition,))
    assert isinstance(caught.value, InvalidFilter) or "metadata key" in message


def test_deleting_a_collection_removes_its_rows_only(store):
    cats = store.create_collection("cats", MODEL)
    dogs = store.create_collection("dogs", MODEL)
    store.upsert(cats, ["c"], unit(1), [{}])
    store.upsert(dogs, ["d"], unit(1), [{}])
    store.delete_collection("cats")
    cats_again = store.create_collection("cats", MODEL)
    assert store.count(cats_again) == 0
    assert store.count(dogs) == 1


def test_models_of_other_dimensions_get_their_own_vector_space(store):
    cats = store.create_collection("cats", MODEL)
    small = store.create_collection("small", OTHER_MODEL)
    store.upsert(cats, ["c"], unit(1), [{}])
    store.upsert(small, ["s"], unit(1, dim=4), [{}])
    (hits,) = store.search(small, unit(1, dim=4), top_k=5)
    assert [h.external_id for h in hits] == ["s"]


def test_a_record_keeps_rows_in_other_spaces_until_it_is_deleted(store):
    """The copy index's way: the collection's record with another space's model."""
    cats = store.create_collection("cats", MODEL)
    dogs = store.create_collection("dogs", MODEL)
    cats_index, dogs_index = replace(cats, model=OTHER_MODEL), replace(dogs, model=OTHER_MODEL)
    store.upsert(cats, ["c"], unit(1), [{}])
    store.upsert(cats_index, ["c", "k"], unit(2, dim=4), [{}, {}])
    store.upsert(dogs_index, ["d"], unit(1, dim=4), [{}])
    (hits,) = store.search(cats_index, unit(1, dim=4), top_k=5)
    assert sorted(h.external_id for h in hits) == ["c", "k"]
    assert store.count(cats) == 1
    store.delete_collection("cats")
    with pytest.raises(CollectionNotFound):
        store.upsert(cats_index, ["late"], unit(1, dim=4), [{}])
    again = store.create_collection("cats", MODEL)
    assert store.count(replace(again, model=OTHER_MODEL)) == 0
    assert store.count(cats_index) == 0  # the old key's rows are gone, not just unlisted
    assert [h.external_id for h in store.search(dogs_index, unit(1, dim=4), 5)[0]] == ["d"]


def test_nothing_is_lost_when_the_store_is_reopened(milvus_backend):
    uri = milvus_backend.new_uri()
    first = open_store(uri)
    cats = first.create_collection("cats", MODEL)
    first.upsert(cats, ["a", "b"], unit(2), [{"k": 1}, {"k": 2}])
    first.close()
    second = open_store(uri)
    cats = second.get_collection("cats")
    assert second.count(cats) == 2
    (hits,) = second.search(cats, unit(2)[:1], top_k=1)
    assert hits[0].external_id == "a"
    second.close()


def test_milvus_servers_without_upsert_are_refused():
    for good in ("v2.3.5", "2.5.13", "v3.0.1", "lite-build"):
        check_server_version(good)
    with pytest.raises(RuntimeError, match=r"Milvus server v2\.2\.16 is not supported"):
        check_server_version("v2.2.16")


def test_servers_before_2_4_get_their_workarounds():
    assert ServerTraits.of("v2.3.5") == ServerTraits(partition_key=False,
                                                     deletes_visible_at_once=False)
    assert ServerTraits.of("v2.4.0") == ServerTraits.of("custom-build") == ServerTraits()


CRASH_AFTER_CONCURRENT_WRITES = """
import os, signal, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from search_service.domain import ModelSpace
from search_service.adapters.milvus.vector_store import open_store
store = open_store(sys.argv[1])
record = store.create_collection("crash", ModelSpace("sha256:" + "ab" * 32, 8, "m"))
vectors = np.eye(8, dtype=np.float32)[np.arange(30) % 8]
def write(batch):
    ids = [f"{batch}-{i}" for i in range(30)]
    store.upsert(record, ids, vectors, [{"i": i} for i in range(30)])
with ThreadPoolExecutor(4) as pool:
    list(pool.map(write, range(40)))
os.kill(os.getpid(), signal.SIGKILL)  # every write returned: all 1200 were acknowledged
"""


def test_concurrent_writes_survive_a_crash_of_the_process(milvus_backend):
    if milvus_backend.server is not None:
        pytest.skip("Milvus Lite's log lives in the service's process; a server's does not")
    import subprocess
    import sys

    uri = milvus_backend.new_uri()
    subprocess.run([sys.executable, "-c", CRASH_AFTER_CONCURRENT_WRITES, uri], check=False,
                   capture_output=True, timeout=300)
    store = open_store(uri)
    try:
        assert store.count(store.get_collection("crash")) == 1200
    finally:
        store.close()


SEED = 20000
FIRST_USES_AT_ONCE = f"SEED = {SEED}" + """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
store = open_store(sys.argv[1])
model = ModelSpace("sha256:" + "ab" * 32, 8, "test-model")
vectors = np.eye(8, dtype=np.float32)[np.arange(1000) % 8]
if sys.argv[2] == "seed":  # a log long enough that opening the collection takes a while
    record = store.create_collection("reopened", model)
    for batch in range(SEED // 1000):
        ids = [f"seed-{batch}-{i}" for i in range(1000)]
        store.upsert(record, ids, vectors, [{"pad": "x" * 100}] * 1000)
elif sys.argv[2] == "count":
    print(store.count(store.get_collection("reopened")))
else:
    record = store.get_collection("reopened")
    start = threading.Barrier(16)
    def write(batch):
        start.wait()  # every thread's first call on the collection at the same moment
        ids = [f"{sys.argv[2]}-{batch}-{i}" for i in range(10)]
        store.upsert(record, ids, vectors[:10], [{}] * 10)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(16)))
store.close()
"""


def test_first_uses_of_a_reopened_lite_collection_at_once_lose_no_write(milvus_backend):
    """Lite opened a collection once per racing first use: the writes of the extra instances
    were acknowledged and lost. (Each step is a process of its own: Lite holds its file.)"""
    if milvus_backend.server is not None:
        pytest.skip("a Lite file opened by the service itself")
    import subprocess
    import sys

    uri = milvus_backend.new_uri()

    def step(what: str) -> str:
        done = subprocess.run([sys.executable, "-c", FIRST_USES_AT_ONCE, uri, what],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    step("seed")
    for round_ in range(3):
        step(f"round{round_}")
    assert step("count") == str(SEED + 3 * 16 * 10)



_REPLICA = """
import sys
import numpy as np
from search_service.adapters.milvus.vector_store import open_store
store = open_store(sys.argv[1])
cats = store.get_collection("cats")
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    store.upsert(cats, ["token"], np.eye(1, 8, n % 8, dtype=np.float32), [{"n": n}])
    print("written", flush=True)
"""


def test_a_strong_read_sees_another_replicas_write_at_once(milvus_backend):
    """A write acknowledged to another replica (another process: pymilvus keeps Session
    timestamps per process) is seen by this one's strong read straight after; the adaptation's
    reset token is read so. (Milvus promises Session reads only the client's own writes; the
    2.3.5 standalone server showed the others' at once too, so tests/search_service/
    test_adaptation.py models the lag on the fakes.)"""
    if milvus_backend.server is None:
        pytest.skip("one process owns a Milvus Lite file: replicas need a server")
    uri = milvus_backend.new_uri()
    mine = open_store(uri)
    cats = mine.create_collection("cats", MODEL)
    mine.upsert(cats, ["mine"], unit(1), [{}])  # its Session reads wait for this write only
    other = subprocess.Popen([sys.executable, "-c", _REPLICA, uri], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert other.stdout.readline().strip() == "ready"
        for n in range(8):
            other.stdin.write(f"{n}\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "written"
            (row,) = mine.get(cats, ["token"], strong=True)
            assert row.metadata == {"n": n}
    finally:
        other.kill()
        other.wait()
        mine.close()
