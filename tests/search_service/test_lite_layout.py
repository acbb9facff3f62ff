"""Milvus Lite's layout (a partition per tenant collection) and its flusher, against real Lite
files; the flusher's schedule also against a recording stand-in, to keep its timing exact."""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient

from search_service.adapters.milvus.config import Flusher
from search_service.adapters.milvus.layout import partition_of
from search_service.adapters.milvus.schema import vectors_collection, vectors_schema
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
from search_service.errors import CollectionNotFound

MODEL = ModelSpace("sha256:" + "ef" * 32, 8, "test-model")
VECTORS = vectors_collection(MODEL)


def unit(rows: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, 8)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def raw(path: Path) -> MilvusClient:
    """A second client of the same in-process Lite server, to look behind the store."""
    return MilvusClient(str(path))


def test_each_collection_lives_in_a_partition_of_its_own(tmp_path):
    path = tmp_path / "lite.db"
    store = open_store(str(path))
    try:
        cats = store.create_collection("cats", MODEL)
        dogs = store.create_collection("dogs", MODEL)
        store.upsert(cats, ["a", "b"], unit(2), [{}, {}])
        store.upsert(dogs, ["a"], unit(1, seed=1), [{}])
        client = raw(path)
        partitions = set(client.list_partitions(VECTORS))
        assert {partition_of(cats.key), partition_of(dogs.key)} <= partitions
        in_cats = client.query(VECTORS, filter='pk != ""', output_fields=["pk"],
                               partition_names=[partition_of(cats.key)])
        assert sorted(row["pk"] for row in in_cats) == [f"{cats.key}/a", f"{cats.key}/b"]
        assert (store.count(cats), store.count(dogs)) == (2, 1)
        store.delete_collection("cats")
        assert partition_of(cats.key) not in client.list_partitions(VECTORS)
        assert store.count(dogs) == 1
    finally:
        store.close()


def test_a_collection_whose_partition_is_missing_still_takes_writes(tmp_path):
    """A creation that stopped between the registry row and the partition (a crash)."""
    path = tmp_path / "lite.db"
    store = open_store(str(path))
    try:
        cats = store.create_collection("cats", MODEL)
        raw(path).drop_partition(VECTORS, partition_of(cats.key))
        assert store.search(cats, unit(1), 5) == [[]]
        store.upsert(cats, ["a"], unit(1), [{"x": 1}])
        assert [image.external_id for image in store.get(cats, ["a"])] == ["a"]
    finally:
        store.close()


def test_files_written_before_partitions_keep_their_layout(tmp_path):
    """A Lite file from before this layout: one vectors collection with a partition key."""
    path = tmp_path / "lite.db"
    old = raw(path)
    params = old.prepare_index_params()
    params.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    old.create_collection(VECTORS, schema=vectors_schema(MODEL, partition_key=True),
                          index_params=params)
    old.close()
    store = open_store(str(path))
    try:
        cats = store.create_collection("cats", MODEL)
        dogs = store.create_collection("dogs", MODEL)
        store.upsert(cats, ["a", "b"], unit(2), [{}, {}])
        store.upsert(dogs, ["c"], unit(1, seed=1), [{}])
        assert partition_of(cats.key) not in raw(path).list_partitions(VECTORS)
        assert (store.count(cats), store.count(dogs)) == (2, 1)
        hits = store.search(dogs, unit(2), 10)
        assert [[hit.external_id for hit in per_query] for per_query in hits] == [["c"], ["c"]]
    finally:
        store.close()


def _data_files(path: Path) -> list[Path]:
    return [f for f in path.rglob("*.parquet") if "imagesearch_vectors" in str(f)]


def test_writes_are_flushed_once_they_pause(tmp_path):
    path = tmp_path / "lite.db"
    store = open_store(str(path))
    try:
        cats = store.create_collection("cats", MODEL)
        store.upsert(cats, [str(i) for i in range(50)], unit(50), [{}] * 50)
        deadline = time.monotonic() + 10
        while not _data_files(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _data_files(path), "50 rows were never flushed to a data file"
        assert store.count(cats) == 50
    finally:
        store.close()


def test_closing_flushes_what_is_pending(tmp_path):
    path = tmp_path / "lite.db"
    store = open_store(str(path))
    cats = store.create_collection("cats", MODEL)
    store.upsert(cats, ["a"], unit(1), [{}])
    store.close()
    assert _data_files(path)


class Recording:
    def __init__(self) -> None:
        self.flushed: list[tuple[str, float]] = []
        self.done = threading.Event()

    def flush(self, name: str, timeout: float) -> None:
        self.flushed.append((name, time.monotonic()))
        self.done.set()


def test_the_flusher_waits_for_a_pause():
    client = Recording()
    flusher = Flusher(client, idle_s=0.3, max_rows=1000)
    try:
        started = time.monotonic()
        for _ in range(5):
            flusher.wrote("v", 10)
            time.sleep(0.1)
        assert client.done.wait(5)
        (name, at), = client.flushed
        assert name == "v" and at - started >= 0.3 + 0.4
    finally:
        flusher.close()


def test_the_flusher_does_not_wait_past_max_rows():
    client = Recording()
    flusher = Flusher(client, idle_s=60, max_rows=100)
    try:
        flusher.wrote("v", 60)
        flusher.wrote("w", 60)
        flusher.wrote("v", 60)
        assert client.done.wait(5)
        assert [name for name, _ in client.flushed] == ["v"]
    finally:
        flusher.close()
    assert sorted(name for name, _ in client.flushed) == ["v", "w"]  # closing flushed "w"


def test_a_new_lite_file_logs_no_error(tmp_path, caplog):
    """pymilvus' wait for a new index called an RPC Lite lacks, and logged its traceback."""
    with caplog.at_level(logging.WARNING):
        store = open_store(str(tmp_path / "lite.db"))
        try:
            cats = store.create_collection("cats", MODEL)
            store.upsert(cats, ["a"], unit(1), [{}])
            assert [hit.external_id for hit in store.search(cats, unit(1), 3)[0]] == ["a"]
        finally:
            store.close()
    assert [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.WARNING] == []


WRITE_UNTIL_KILLED = """
import sys
import numpy as np
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import ModelSpace
from search_service.errors import CollectionNotFound
store = open_store(sys.argv[1])
model = ModelSpace("sha256:" + "ef" * 32, 8, "test-model")
try:
    record = store.get_collection("crash")
except Exception:
    record = store.create_collection("crash", model)
vectors = np.eye(8, dtype=np.float32)[np.arange(500) % 8]
for batch in range(10_000):
    store.upsert(record, [f"{sys.argv[2]}-{batch}-{i}" for i in range(500)], vectors,
                 [{}] * 500)
    print(batch, flush=True)  # acknowledged
"""


@pytest.mark.slow
def test_a_kill_during_flushes_loses_no_acknowledged_write(tmp_path):
    """SIGKILL at seeded random moments while the flusher flushes every 4,096 rows."""
    rng = random.Random(5)
    uri = str(tmp_path / "lite.db")
    acknowledged: set[str] = set()
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", WRITE_UNTIL_KILLED, uri, str(round_)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        kill_after = rng.randint(9, 30)  # batches: 4,500-15,000 rows, 1-3 flushes
        for line in child.stdout:
            batch = int(line)
            acknowledged.update(f"{round_}-{batch}-{i}" for i in range(500))
            if batch + 1 == kill_after:
                time.sleep(rng.uniform(0, 0.5))
                child.send_signal(signal.SIGKILL)
                break
        child.wait(30)
    store = open_store(uri)
    try:
        record = store.get_collection("crash")
        stored = {image.external_id for image in _all(store, record)}
        assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged rows lost"
    finally:
        store.close()


def _all(store, record):
    after = ""
    while page := store.list_images(record, 1000, after, with_metadata=False):
        yield from page
        after = page[-1].external_id


def test_writers_racing_to_make_a_missing_partition_all_succeed(tmp_path):
    """Found from outside: the second create_partition failed, and so did its writer."""
    path = tmp_path / "lite.db"
    store = open_store(str(path))
    failures: list[str] = []
    try:
        for trial in range(5):
            record = store.create_collection(f"c{trial}", MODEL)
            raw(path).drop_partition(VECTORS, partition_of(record.key))
            start = threading.Barrier(4)

            def write(writer: int, record=record, start=start) -> None:
                start.wait()
                try:
                    store.upsert(record, [str(writer)], unit(1, seed=writer), [{}])
                except Exception as err:  # collected for the assertion
                    failures.append(repr(err))

            threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert store.count(record) == 4
    finally:
        store.close()
    assert failures == []


def test_two_deletions_of_one_collection_end_ok_or_not_found(tmp_path):
    store = open_store(str(tmp_path / "lite.db"))
    outcomes: list[str] = []
    try:
        for _ in range(5):
            store.create_collection("twice", MODEL)
            start = threading.Barrier(2)

            def delete(start=start) -> None:
                start.wait()
                try:
                    store.delete_collection("twice")
                    outcomes.append("ok")
                except CollectionNotFound:
                    outcomes.append("not found")
                except Exception as err:  # collected for the assertion
                    outcomes.append(repr(err))

            threads = [threading.Thread(target=delete) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        store.close()
    assert set(outcomes) <= {"ok", "not found"}, outcomes


def test_a_flushed_collection_still_answers_a_large_top_k_in_full(tmp_path):
    """Lite's AUTOINDEX (faiss HNSW) searched at ef 64: after the flush, top_k 1000 over 300
    images returned ~220."""
    store = open_store(str(tmp_path / "lite.db"))
    try:
        record = store.create_collection("k", MODEL)
        store.upsert(record, [str(i) for i in range(300)], unit(300), [{}] * 300)
        before = len(store.search(record, unit(1, seed=9), 1000)[0])
        store._catalog.wrote(VECTORS, 10_000)  # flush now
        deadline = time.monotonic() + 10
        while not _data_files(tmp_path / "lite.db") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _data_files(tmp_path / "lite.db")
        after = len(store.search(record, unit(1, seed=9), 1000)[0])
        assert (before, after) == (300, 300)
    finally:
        store.close()
