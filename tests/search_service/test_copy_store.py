"""Copying every collection between real Milvus stores (Lite to Lite, Lite to a server)."""

from __future__ import annotations

import numpy as np
import pytest

from search_service.adapters.milvus.vector_store import open_store
from search_service.copy_store import copy_all, main
from search_service.domain import ModelSpace

MODEL = ModelSpace("sha256:" + "12" * 32, 8, "test-model")
OTHER = ModelSpace("sha256:" + "34" * 32, 4, "other-model")


def unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def source(tmp_path):
    """A Lite file with two collections of two models (one over several pages) and a
    deleted one."""
    uri = str(tmp_path / "source.db")
    store = open_store(uri)
    big = store.create_collection("big", MODEL, "many")
    ids = [f"img-{i:04d}" for i in range(1203)]
    store.upsert(big, ids, unit(1203, 8, 1), [{"n": i, "tag": "x" if i % 2 else "y"}
                                              for i in range(1203)])
    small = store.create_collection("small", OTHER)
    store.upsert(small, ["a", "b"], unit(2, 4, 2), [{}, {"k": True}])
    gone = store.create_collection("gone", MODEL)
    store.upsert(gone, ["z"], unit(1, 8, 3), [{}])
    store.delete_collection("gone")
    yield uri, store
    store.close()


def test_every_collection_is_copied_with_its_vectors_and_metadata(source, milvus_backend):
    _, store = source
    target = open_store(milvus_backend.new_uri())
    try:
        done = copy_all(store, target, skip_existing=False, replace_partial=False,
                        report=lambda _: None)
        assert done == {"big": 1203, "small": 2}
        copy = target.get_collection("big")
        assert (copy.model, copy.description) == (MODEL, "many")
        original = store.get_collection("big")
        query = unit(1, 8, 9)
        expected = store.search(original, query, 5)
        got = target.search(copy, query, 5)
        assert [(h.external_id, h.metadata) for h in got[0]] == [
            (h.external_id, h.metadata) for h in expected[0]]
        np.testing.assert_allclose([h.similarity for h in got[0]],
                                   [h.similarity for h in expected[0]], atol=1e-5)
        (b,) = target.get(target.get_collection("small"), ["b"], with_vectors=True)
        assert b.metadata == {"k": True} and b.vector is not None and b.vector.shape == (4,)
        with pytest.raises(Exception, match="not exist"):
            target.get_collection("gone")
    finally:
        target.close()


def test_a_second_copy_is_refused_skipped_or_completed(source, milvus_backend):
    _, store = source
    target = open_store(milvus_backend.new_uri())
    try:
        copy_all(store, target, False, False, lambda _: None)
        with pytest.raises(SystemExit, match="'big' already exists in the target"):
            copy_all(store, target, False, False, lambda _: None)
        assert copy_all(store, target, True, False, lambda _: None) == {}
        # A copy that stopped half-way: 'small' short of one image.
        target.delete(target.get_collection("small"), ["a"])
        said: list[str] = []
        assert copy_all(store, target, False, True, said.append) == {"small": 2}
        assert "big: already in the target (1203 of 1203 images), skipped" in said
        assert "small: the target holds 1 of 2 images; deleting its copy" in said[1]
        assert target.count(target.get_collection("small")) == 2
    finally:
        target.close()


def test_the_command_copies_a_file_to_another(tmp_path, source, capsys):
    uri, store = source
    store.close()  # a Lite file opens in one process: the service must be stopped first
    assert main(["--from", uri, "--to", str(tmp_path / "target.db")]) == 0
    out = capsys.readouterr().out
    assert "copied big: 1203 images" in out and "copied small: 2 images" in out
