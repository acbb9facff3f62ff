"""The folder image store, and the core on it when the embedder makes no copy signals."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagesearch.errors import FailedPrecondition
from search_service.adapters.image_folder import FolderImageStore
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import DuplicateMode, MatchKind, NewImage, Query
from search_service.errors import ImageStoreUnavailable
from tests.search_service.fakes import FakeEmbedder, FakeStore


def _files(root: Path, pattern: str, dirs: bool = False) -> list[Path]:
    return [p for p in root.rglob(pattern) if dirs or p.is_file()]


async def test_no_file_lies_outside_the_folder_or_bears_a_callers_name(tmp_path: Path) -> None:
    """The contract both stores keep is tests/search_service/test_image_s3.py's."""
    store = FolderImageStore(tmp_path)
    hostile = ["a/b", "a:b", "../../etc/passwd", "..", ".", "a\\b", "é", "x" * 2000]
    await store.put("k1", "copy", [(i, i.encode()) for i in hostile])
    await store.put("k1", "thumb", [("a/b", b"thumb")])
    for path in _files(tmp_path, "*", dirs=True):
        assert _inside(path, tmp_path)
        assert path.name in ("copy", "thumb") or all(c in "0123456789abcdef" for c in path.name)
    await store.close()


async def test_a_put_racing_its_collections_deletion_still_lands(tmp_path: Path,
                                                                 monkeypatch) -> None:
    # The folder is renamed away between the put's mkdir and its write (seen under load):
    # the put lands in a fresh folder (the deleted key's, swept later), it does not fail.
    store = FolderImageStore(tmp_path)
    await store.put("k", "copy", [("first", b"1")])
    real, raced = tempfile.mkstemp, []

    def racing(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(True)
            store._delete_collection("k")
        return real(*args, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", racing)
    await store.put("k", "copy", [("second", b"2")])
    assert raced and await store.get("k", "copy", ["first", "second"]) == {"second": b"2"}
    await store.close()


async def test_concurrent_writes_of_one_id_leave_one_whole_value(tmp_path: Path) -> None:
    store = FolderImageStore(tmp_path, threads=8)
    values = [bytes([n]) * 100_000 for n in range(32)]
    await asyncio.gather(*(store.put("k", "copy", [("same", v)]) for v in values))
    assert (await store.get("k", "copy", ["same"]))["same"] in values
    assert not _files(tmp_path, ".tmp-*")
    await store.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8, unique=True))
def test_any_ids_round_trip(tmp_path_factory: pytest.TempPathFactory, ids: list[str]) -> None:
    async def run() -> None:
        store = FolderImageStore(tmp_path_factory.mktemp("fuzz"))
        await store.put("key", "copy", [(i, i.encode("utf-8", "surrogatepass")) for i in ids])
        assert await store.get("key", "copy", ids) == {
            i: i.encode("utf-8", "surrogatepass") for i in ids}
        await store.close()

    asyncio.run(run())


async def test_a_file_where_the_folder_should_be_is_unavailable(tmp_path: Path) -> None:
    _write(tmp_path / "images", b"not a folder")
    store = FolderImageStore(tmp_path / "images")
    with pytest.raises(ImageStoreUnavailable, match="retry shortly"):
        await store.put("k", "copy", [("a", b"x")])
    with pytest.raises(ImageStoreUnavailable):
        await store.check()


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.fixture
def app_without_signals(tmp_path: Path) -> SearchApp:
    """An embedder older than copy signals, beside a service that keeps them."""
    return SearchApp(SearchCore(FakeStore(), FakeEmbedder(), images=FolderImageStore(tmp_path)))


async def test_images_without_signals_fall_back_to_similar_unless_copies_are_asked(
        app_without_signals: SearchApp) -> None:
    app = app_without_signals
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage(i, i.encode() * 10, {}) for i in ("a", "b")])
    found = await app.find_duplicates("c", Query(image_id="a"), -1.0, 5)
    assert found.mode is DuplicateMode.SIMILAR
    assert [(h.external_id, h.match) for h in found.hits] == [("b", MatchKind.SIMILAR)]
    with pytest.raises(FailedPrecondition, match="has no copy signal"):
        await app.find_duplicates("c", Query(image_id="a"), 0.0, 5, mode=DuplicateMode.COPIES)
    with pytest.raises(FailedPrecondition, match="embedder made no copy signal"):
        await app.find_duplicates("c", Query(image=b"a" * 10), 0.0, 5,
                                  mode=DuplicateMode.COPIES)
    groups = await app.duplicate_groups("c", 0.0, 2, mode=DuplicateMode.COPIES)
    assert (groups.groups, groups.scanned, groups.unverified) == ([], 2, 2)


async def test_the_same_bytes_are_exact_even_without_signals(
        app_without_signals: SearchApp) -> None:
    app = app_without_signals
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage("a", b"same" * 10, {}), NewImage("b", b"same" * 10, {}),
                               NewImage("c", b"other" * 10, {})])
    groups = await app.duplicate_groups("c", 0.0, 2, mode=DuplicateMode.COPIES)
    assert [g.ids for g in groups.groups] == [["a", "b"]]


async def test_copies_without_an_image_store_is_a_precondition() -> None:
    app = SearchApp(SearchCore(FakeStore(), FakeEmbedder()))
    await app.create_collection("c", "")
    with pytest.raises(FailedPrecondition, match="SEARCH_IMAGE_STORE is off"):
        await app.find_duplicates("c", Query(image_id="a"), 0.0, 5, mode=DuplicateMode.COPIES)
