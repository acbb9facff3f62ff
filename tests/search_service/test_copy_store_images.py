"""copy_store carrying the image store, under careless use (found by an outside review):
mistyped or missing stores, a bucket that does not exist, --replace-partial."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest

from search_service.adapters.image_folder import FolderImageStore
from search_service.adapters.milvus.vector_store import open_store
from search_service.copy_store import main
from search_service.domain import ModelSpace
from tests.search_service.test_image_s3 import (  # noqa: F401  (fixtures)
    _keys,
    new_bucket,
    s3_credentials,
    s3_endpoint,
)

MODEL = ModelSpace("sha256:" + "12" * 32, 8, "test-model")
IDS = ["a", "b", "c"]


def _unit(rows: int) -> np.ndarray:
    v = np.random.default_rng(1).standard_normal((rows, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_source(tmp_path: Path, with_images: bool = True) -> str:
    uri = str(tmp_path / "src.db")
    store = open_store(uri)
    record = store.create_collection("c", MODEL)
    store.upsert(record, IDS, _unit(3), [{}] * 3)
    store.close()
    if with_images:
        images = FolderImageStore(Path(uri + ".images"))
        asyncio.run(images.put(record.key, "copy", [
            (i, hashlib.sha256(i.encode()).digest()) for i in IDS]))
        asyncio.run(images.close())
    return uri


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def no_imds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize("typo", ["s3:/bucket/prefix", "S3://bucket/prefix", "s3//bucket"])
def test_a_mistyped_s3_uri_for_images_to_is_refused(tmp_path, monkeypatch, typo) -> None:
    """The service refuses such a SEARCH_IMAGE_STORE at start-up (settings._object_store_uri);
    copy_store takes it as a local folder and writes the copy signals there."""
    source = make_source(tmp_path)
    monkeypatch.chdir(tmp_path)
    try:
        main(["--from", source, "--to", str(tmp_path / "dst.db"), "--images-to", typo])
    except SystemExit:
        return
    except ValueError:
        return
    written = [p for p in _files(tmp_path) if "src.db.images" not in str(p)
               and "dst.db" not in str(p) and "src.db" not in str(p)]
    pytest.fail(f"--images-to {typo!r} was taken as a local folder: wrote {written}")


def test_a_missing_images_from_folder_is_refused(tmp_path) -> None:
    source = make_source(tmp_path)
    try:
        main(["--from", source, "--to", str(tmp_path / "dst.db"),
              "--images-from", str(tmp_path / "src.db.imagez")])  # typo
    except SystemExit:
        return
    copied = _files(tmp_path / "dst.db.images")
    pytest.fail(f"a nonexistent --images-from copied silently ({len(copied)} records)")


def test_images_to_without_any_source_image_store_is_not_silently_ignored(
        tmp_path, capsys) -> None:
    source = make_source(tmp_path, with_images=False)
    target_images = tmp_path / "elsewhere"
    try:
        main(["--from", source, "--to", str(tmp_path / "dst.db"),
              "--images-to", str(target_images)])
    except SystemExit:
        return
    err = capsys.readouterr().err
    assert "images-to" in err or "image store" in err.lower() or "copy signal" in err.lower(), (
        f"--images-to was ignored without a word: {err!r}")


def test_an_unusable_images_to_bucket_is_found_before_anything_is_copied(
        tmp_path, s3_endpoint) -> None:  # noqa: F811
    source = make_source(tmp_path)
    target = str(tmp_path / "dst.db")
    with pytest.raises(SystemExit, match=r"image store: the image store failed \(404\)") as failed:
        main(["--from", source, "--to", target, "--images-to", "s3://no-such-bucket/x",
              "--images-endpoint", s3_endpoint])
    store = open_store(target)
    try:
        names = [r.name for r in store.list_collections(100, "")]
    finally:
        store.close()
    assert names == [], (f"failed with {failed.value!r} after creating {names} in the target; "
                         "a rerun now needs --replace-partial")


def test_replace_partial_leaves_no_records_of_the_deleted_copy(tmp_path) -> None:
    source = make_source(tmp_path)
    target = str(tmp_path / "dst.db")
    assert main(["--from", source, "--to", target]) == 0
    assert len(_files(Path(target + ".images"))) == 3
    store = open_store(target)
    store.delete(store.get_collection("c"), ["a"])
    store.close()
    assert main(["--from", source, "--to", target, "--replace-partial"]) == 0
    left = _files(Path(target + ".images"))
    assert len(left) == 3, f"{len(left)} records in the target's image store for 3 images"


def test_a_target_that_already_has_the_collection_is_refused_before_images_move(
        tmp_path) -> None:
    source = make_source(tmp_path)
    target = str(tmp_path / "dst.db")
    store = open_store(target)
    store.create_collection("c", MODEL)
    store.close()
    with pytest.raises(SystemExit, match="already exists"):
        main(["--from", source, "--to", target])
    assert _files(Path(target + ".images")) == []
