"""The copy index: candidates the embedding ranks too low to verify, found by index hash;
its rows follow their images. The core against in-memory fakes of its ports, with real copy
signals; the same path runs on real Milvus in test_copies_e2e.py."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image, ImageOps

from bench import copy_data
from imagesearch.copies import index
from imagesearch.copies import signal as signals
from search_service import copy_index
from search_service.core import SearchCore
from search_service.domain import DuplicateMode, Embedding, Kept, NewImage, Query
from search_service.duplicates import COPY_CANDIDATES, duplicate_groups, find_duplicates
from tests.search_service.fakes import FakeEmbedder, FakeStore, MemoryImages, unit


class SigningEmbedder(FakeEmbedder):
    """Real copy signals; one and the same vector for every image, so that the embedding
    ranks them by id alone - no better than chance at finding a copy."""

    async def embed_images_signed(self, images: Sequence[bytes],
                                  remaining: float | None = None, thumbnail_side: int = 0,
                                  model: str = "", pixels_side: int = 0,
                                  ) -> tuple[str, list[Embedding], list[Kept]]:
        await self.model()
        same = unit("every image")
        return self.serving.fingerprint, [same] * len(images), [
            Kept(signals.encode(signals.compute(Image.open(io.BytesIO(data)))))
            for data in images]


def png(image: Image.Image) -> bytes:
    return copy_data.encoded(image)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return copy_data.photos()["coffee"]


@pytest.fixture
async def collection(photo):
    """The photo, behind more distractors (ids that sort first) than the embedding's
    candidates."""
    store = FakeStore()
    core = SearchCore(store, SigningEmbedder(), images=MemoryImages())
    await core.create_collection("c", "")
    rng = random.Random(5)
    distractors = [NewImage(f"a{n:03d}", png(copy_data.distractor(rng, 128)), {})
                   for n in range(COPY_CANDIDATES + 10)]
    for start in range(0, len(distractors), 32):
        await core.add_images("c", distractors[start:start + 32])
    await core.add_images("c", [NewImage("z-original", png(photo), {})])
    return core, store


def framed(photo: Image.Image) -> bytes:
    return png(copy_data.REPORT["pad"](photo, random.Random(1)))


async def test_a_copy_the_embedding_ranks_too_low_is_found_through_the_copy_index(
        collection, photo):
    core, store = collection
    found = await find_duplicates(core, "c", Query(image=framed(photo)), 0.0, 10)
    assert [h.external_id for h in found.hits] == ["z-original"]
    mirrored = await find_duplicates(core, "c", Query(image=png(ImageOps.mirror(photo))), 0.0,
                                     10)
    assert [h.external_id for h in mirrored.hits] == ["z-original"]
    # Without its index row, the embedding's candidates alone miss it.
    record = await core.collection("c")
    await store.delete(copy_index.of(record), ["z-original"])
    missed = await find_duplicates(core, "c", Query(image=framed(photo)), 0.0, 10)
    assert missed.hits == []


async def test_groups_join_copies_the_embedding_never_made_neighbours(collection, photo):
    core, store = collection
    await core.add_images("c", [NewImage("z-framed", framed(photo), {})])
    found = await duplicate_groups(core, "c", 0.0, 10, DuplicateMode.COPIES)
    assert [g.ids for g in found.groups] == [["z-framed", "z-original"]]
    record = await core.collection("c")
    await store.delete(copy_index.of(record), ["z-framed", "z-original"])
    found = await duplicate_groups(core, "c", 0.0, 10, DuplicateMode.COPIES)
    assert found.groups == []


async def test_index_rows_follow_their_images(collection, photo):
    core, store = collection
    record = await core.collection("c")
    rows = await store.get(copy_index.of(record), ["z-original"], with_vectors=True)
    assert len(rows) == 1
    assert np.isclose(np.linalg.norm(rows[0].vector), 1.0)
    await core.delete_images("c", ["z-original"])
    assert await store.get(copy_index.of(record), ["z-original"]) == []
    # A row whose image is gone (an index write that outlived a deletion) is no candidate.
    stray = index.vector(index.hashes(signals.compute(photo))[0])
    await store.upsert(copy_index.of(record), ["z-original"], stray[None], [{}])
    found = await find_duplicates(core, "c", Query(image=framed(photo)), 0.0, 10)
    assert found.hits == []
    await core.delete_collection("c")
    assert store.spaces == {}


async def test_an_image_added_again_without_a_signal_loses_its_index_row(collection, photo):
    core, store = collection
    record = await core.collection("c")
    await copy_index.add(store, record, [("z-original", None), ("a000", b"not a signal")])
    assert await store.get(copy_index.of(record), ["z-original", "a000"]) == []


def test_index_hash_vectors_rank_by_hamming_distance() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        a, b = rng.random(index.BITS) < 0.5, rng.random(index.BITS) < 0.5
        cosine = float(np.dot(index.vector(a), index.vector(b)))
        assert index.hamming(cosine) == int((a != b).sum())


@pytest.mark.parametrize("edit", ["pad", "watermark", "rotate5", "hflip", "jpeg30"])
def test_framed_marked_turned_and_mirrored_copies_keep_their_index_hash_near(photo, edit):
    """Within 14 bits; unrelated photos lie near 32 (bench/copy_index_eval.py ranks them)."""
    original = index.hashes(signals.compute(photo))[0]
    plain, mirrored = index.hashes(signals.compute(copy_data.REPORT[edit](
        photo, random.Random(2))))
    assert min((plain != original).sum(), (mirrored != original).sum()) <= 14


async def test_another_tenants_copy_is_never_a_candidate(collection, photo):
    core, _ = collection
    await core.create_collection("other", "")
    await core.add_images("other", [NewImage("theirs", png(photo), {})])
    await core.delete_images("c", ["z-original"])
    found = await find_duplicates(core, "c", Query(image=framed(photo)), 0.0, 10)
    assert found.hits == []
    theirs = await find_duplicates(core, "other", Query(image=framed(photo)), 0.0, 10)
    assert [h.external_id for h in theirs.hits] == ["theirs"]
