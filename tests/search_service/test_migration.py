"""Migrations between models on the core's fakes: every state and control, writes during the
copy, restarts, and the invariants - no image lost, no vector of one model in the other's
space. tests/search_service/test_migration_e2e.py runs them on real Milvus and embedders."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from imagesearch.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from search_service import class_names
from search_service.application import SearchApp
from search_service.core import PixelPolicy, SearchCore
from search_service.domain import CollectionRecord, MigrationState, NewImage, Query
from search_service.errors import MigrationConflict
from search_service.migration import Migrations, MigrationWorker
from tests.search_service.fakes import (
    MODEL,
    OTHER_MODEL,
    FakeEmbedder,
    FakeStore,
    MemoryImages,
    unit,
)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def parts():
    clock = Clock()
    store, embedder = FakeStore(clock), FakeEmbedder(extra=[OTHER_MODEL])
    core = SearchCore(store, embedder, images=MemoryImages(), record_ttl_s=0)
    migrations = Migrations(core, "worker-1", lease_s=30, settle_s=10, page=4, clock=clock)
    return SearchApp(core, migrations), store, embedder, clock


def new(*ids: str, tag: str = "") -> list[NewImage]:
    return [NewImage(i, f"pixels of {i}{tag}".encode(), {"n": i}) for i in ids]


def target_vector(data: bytes) -> np.ndarray:
    return unit(OTHER_MODEL.fingerprint + data.hex(), OTHER_MODEL.dimension)


async def copy_all(app: SearchApp, clock: Clock, name: str = "c") -> None:
    """Steps the copy to its end, the settle time passed."""
    while await app.migrations.step(name):
        pass
    clock.ms += 11_000
    while await app.migrations.step(name):
        pass


def rows(store: FakeStore, record: CollectionRecord, space=OTHER_MODEL) -> dict:
    return store.spaces[record.key].get(space.fingerprint, {})


def assert_space_holds(store: FakeStore, record: CollectionRecord, expected: dict[str, bytes],
                       space=OTHER_MODEL) -> None:
    """Exactly the images `expected` names, each with the vector its pixels make in `space`."""
    held = rows(store, record, space)
    assert sorted(held) == sorted(expected)
    for image_id, data in expected.items():
        want = (target_vector(data) if space == OTHER_MODEL else unit(data.hex()))
        np.testing.assert_allclose(held[image_id].vector, want, rtol=1e-6)


async def test_a_collection_moves_to_another_model_and_searches_there(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    images = new(*(f"i{n:02d}" for n in range(10)))
    await app.add_images("c", images)
    started = await app.start_migration("c", OTHER_MODEL.model_name)
    assert (started.state, started.total, started.target) == (
        MigrationState.COPYING, 10, OTHER_MODEL)
    await copy_all(app, clock)
    done = await app.get_migration("c")
    assert done.state is MigrationState.SWITCHED and done.copied == 10
    record = store.records["c"]
    assert record.model == OTHER_MODEL
    assert_space_holds(store, record, {i.id: i.data for i in images})
    (result,) = await app.search("c", [Query(image=images[3].data)], 1, -1.0, [])
    assert result.hits[0].external_id == "i03"
    assert result.hits[0].similarity == pytest.approx(1.0)


async def test_writes_during_the_copy_land_in_both_models_and_deletes_leave_both(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b", "c", "d", "e", "f"))
    await app.start_migration("c", OTHER_MODEL.fingerprint)
    assert await app.migrations.step("c")  # a page copied: a..d
    await app.add_images("c", new("a", tag=" again") + new("zz"))  # behind and ahead
    await app.delete_images("c", ["b", "f"])
    record = store.records["c"]
    assert sorted(rows(store, record)) == ["a", "c", "d", "zz"]
    await copy_all(app, clock)
    expected = {i.id: i.data for i in new("c", "d", "e", "zz") + new("a", tag=" again")}
    assert_space_holds(store, store.records["c"], expected)
    # In the grace period the old model's space is kept current too.
    await app.add_images("c", new("late"))
    await app.delete_images("c", ["c"])
    expected_old = {k: v for k, v in {**expected, "late": b"pixels of late"}.items()
                    if k != "c"}
    assert_space_holds(store, store.records["c"], expected_old, space=MODEL)


async def test_an_image_rewritten_while_its_page_is_copied_is_copied_again(parts):
    app, store, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    core, real_embed = app.core, app.core.embed_images

    async def racing(record, data, remaining):
        # The add lands between the copy's read of the pixels and its write.
        core.embed_images = real_embed  # type: ignore[method-assign]
        await core.add_images("c", new("a", tag=" v2"))
        return await real_embed(record, data, remaining)
    core.embed_images = racing  # type: ignore[method-assign]
    await app.migrations.step("c")
    assert_space_holds(store, store.records["c"],
                       {"a": b"pixels of a v2", "b": b"pixels of b"})


async def test_a_write_that_read_the_record_before_the_start_is_not_lost(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    stale = store.records["c"]
    await app.start_migration("c", OTHER_MODEL.model_name)
    assert await app.migrations.step("c")
    # A write that read the record before the start lands now, in the source alone, with its
    # pixels; and a delete does the same.
    for image_id, data in (("late", b"pixels of late"), ("a", b"pixels of a v2")):
        await app.core.images.put(stale.key, "pixels", [(image_id, data)])
        await store.upsert(stale, [image_id], np.stack([unit(data.hex())]), [{}])
    await store.delete(stale, ["b"])
    await copy_all(app, clock)
    assert store.records["c"].model == OTHER_MODEL
    assert_space_holds(store, store.records["c"], {"a": b"pixels of a v2",
                                                   "late": b"pixels of late"})


async def test_the_switch_waits_for_writes_that_may_still_land(parts):
    app, _store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    while await app.migrations.step("c"):
        pass
    assert (await app.get_migration("c")).state is MigrationState.COPYING
    clock.ms += 11_000
    await app.migrations.step("c")
    assert (await app.get_migration("c")).state is MigrationState.SWITCHED


async def test_pause_stops_the_copy_and_resume_goes_on_from_where_it_stood(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new(*(f"i{n}" for n in range(10))))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await app.migrations.step("c")
    paused = await app.pause_migration("c")
    assert paused.state is MigrationState.PAUSED and paused.cursor == "i3"
    assert not await app.migrations.step("c")
    assert len(rows(store, store.records["c"])) == 4
    with pytest.raises(MigrationConflict, match="PAUSED"):
        await app.pause_migration("c")
    assert (await app.resume_migration("c")).state is MigrationState.COPYING
    await copy_all(app, clock)
    assert (await app.get_migration("c")).copied == 10


async def test_cancel_leaves_the_collection_as_it_was(parts):
    app, store, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b", "c", "d", "e"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await app.migrations.step("c")
    cancelled = await app.cancel_migration("c")
    assert cancelled.state is MigrationState.CANCELLED
    record = store.records["c"]
    assert record.model == MODEL and record.shadow is None
    assert rows(store, record) == {}
    await app.add_images("c", new("f"))  # one model again
    assert rows(store, record) == {}
    with pytest.raises(MigrationConflict):
        await app.rollback_migration("c")
    # And a new migration to the same model starts afresh.
    assert (await app.start_migration("c", OTHER_MODEL.model_name)).total == 6


async def test_rollback_in_the_grace_period_returns_to_the_old_model_with_every_write(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    await app.add_images("c", new("after"))
    await app.delete_images("c", ["a"])
    rolled = await app.rollback_migration("c")
    assert rolled.state is MigrationState.ROLLED_BACK
    record = store.records["c"]
    assert record.model == MODEL and rows(store, record) == {}
    assert_space_holds(store, record, {"b": b"pixels of b", "after": b"pixels of after"},
                       space=MODEL)


async def test_the_old_vectors_go_when_the_grace_period_ends_or_on_finish(parts):
    app, store, _, clock = parts
    for name in ("c", "d"):
        await app.create_collection(name, "")
        await app.add_images(name, new("a"))
        await app.start_migration(name, OTHER_MODEL.model_name, grace_period_s=60)
        await copy_all(app, clock, name)
    finished = await app.finish_migration("c")
    assert finished.state is MigrationState.FINISHED
    assert rows(store, store.records["c"], MODEL) == {}
    assert rows(store, store.records["d"], MODEL) != {}
    clock.ms += 61_000
    await app.migrations.step("d")
    assert (await app.get_migration("d")).state is MigrationState.FINISHED
    assert rows(store, store.records["d"], MODEL) == {}
    await app.add_images("d", new("b"))  # one model again
    assert rows(store, store.records["d"], MODEL) == {}


async def test_images_without_pixels_hold_the_switch_unless_forced(parts):
    app, store, _, clock = parts
    app.core.pixels = PixelPolicy("off")
    await app.create_collection("c", "")
    await app.add_images("c", new("old1", "old2"))
    app.core.pixels = PixelPolicy()
    await app.add_images("c", new("new1"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    held = await app.get_migration("c")
    assert held.state is MigrationState.COPIED
    assert (held.skipped, held.skipped_ids) == (2, ("old1", "old2"))
    with pytest.raises(MigrationConflict, match=r"2 images .* could not be copied"):
        await app.switch_migration("c")
    await app.add_images("c", new("old1"))  # added again: now it has pixels
    switched = await app.switch_migration("c", force=True)
    assert switched.state is MigrationState.SWITCHED
    assert sorted(rows(store, store.records["c"], OTHER_MODEL)) == ["new1", "old1"]


async def test_a_migration_asked_to_wait_switches_on_request(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a"))
    await app.start_migration("c", OTHER_MODEL.model_name, switch_when_copied=False)
    await copy_all(app, clock)
    assert (await app.get_migration("c")).state is MigrationState.COPIED
    assert store.records["c"].model == MODEL
    assert (await app.switch_migration("c")).state is MigrationState.SWITCHED
    assert store.records["c"].model == OTHER_MODEL


async def test_a_restarted_worker_takes_over_once_the_claim_lapses(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new(*(f"i{n}" for n in range(10))))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await app.migrations.step("c")  # worker-1 copies a page, then dies
    other = Migrations(app.core, "worker-2", lease_s=30, settle_s=10, page=4, clock=clock)
    assert not await other.step("c")  # worker-1's claim still holds
    clock.ms += 31_000
    assert await other.step("c")
    assert (await other.get("c")).cursor == "i7" and (await other.get("c")).worker == "worker-2"
    while await other.step("c"):
        pass
    assert (await other.get("c")).state is MigrationState.SWITCHED
    assert len(rows(store, store.records["c"])) == 10


async def test_the_worker_runs_every_migration_and_records_failures(parts):
    app, _store, embedder, clock = parts
    for name in ("c", "d"):
        await app.create_collection(name, "")
        await app.add_images(name, new("a", "b"))
        await app.start_migration(name, OTHER_MODEL.model_name)
    clock.ms += 11_000
    embedder.down_models.add(OTHER_MODEL.fingerprint)
    worker = MigrationWorker(app.migrations)
    await worker.run_once()
    stuck = await app.get_migration("c")
    assert stuck.state is MigrationState.COPYING and "unavailable" in stuck.error
    embedder.down_models.clear()
    await worker.run_once()
    for name in ("c", "d"):
        migration = await app.get_migration(name)
        assert (migration.state, migration.error) == (MigrationState.SWITCHED, "")


async def test_a_write_the_target_refuses_fails_alone_and_lands_nowhere(parts):
    app, store, embedder, _ = parts
    await app.create_collection("c", "")
    await app.start_migration("c", OTHER_MODEL.model_name)
    embedder.refuses[OTHER_MODEL.fingerprint] = {b"pixels of x"}
    outcomes = await app.add_images("c", new("x", "y"))
    assert not outcomes[0].ok and "moving to model other-model" in outcomes[0].message
    assert outcomes[1].ok
    record = store.records["c"]
    assert sorted(rows(store, record, MODEL)) == ["y"] and sorted(rows(store, record)) == ["y"]


async def test_class_names_and_feedback_move_with_the_collection(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.add_class_names("c", ["cat", "dog"])
    await app.record_feedback("c", Query(text="a cat"), ["a"], ["b"])
    await app.record_feedback("c", Query(image_id="b"), ["b"], [])
    await app.record_feedback("c", Query(image=b"pixels of q"), ["a"], [])
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    assert sorted((await app.list_class_names("c", 10, ""))[0]) == ["cat", "dog"]
    record = store.records["c"]
    names = rows(store, class_names.of(record), class_names.of(record).model)
    assert all(r.vector.shape == (OTHER_MODEL.dimension,) for r in names.values())
    judged, _ = await app.list_feedback("c", 10, "", True)
    # The text and the indexed image's judgements; a query image's vector was the old
    # model's and cannot be made again.
    assert sorted((j.query_kind, j.image_id) for j in judged) == [
        ("image_id", "b"), ("text", "a"), ("text", "b")]
    assert all(j.query_vector.shape == (OTHER_MODEL.dimension,) for j in judged)


async def test_bad_starts_and_controls_are_refused_with_reasons(parts):
    app, store, _, _ = parts
    await app.create_collection("c", "")
    with pytest.raises(NotFound, match="not served"):
        await app.start_migration("c", "no-such-model")
    with pytest.raises(InvalidArgument, match="already uses model"):
        await app.start_migration("c", MODEL.model_name)
    with pytest.raises(InvalidArgument, match="name the model"):
        await app.start_migration("c", "")
    with pytest.raises(InvalidArgument, match="grace_period_seconds"):
        await app.start_migration("c", OTHER_MODEL.model_name, grace_period_s=-1)
    with pytest.raises(NotFound, match="never had a migration"):
        await app.get_migration("c")
    for control in (app.pause_migration, app.resume_migration, app.cancel_migration,
                    app.switch_migration, app.rollback_migration, app.finish_migration):
        with pytest.raises(NotFound):
            await control("c")
        with pytest.raises(NotFound):
            await control("missing")
    await app.start_migration("c", OTHER_MODEL.model_name)
    with pytest.raises(AlreadyExists, match="cancel or finish it first"):
        await app.start_migration("c", OTHER_MODEL.model_name)
    for control in (app.resume_migration, app.switch_migration, app.rollback_migration,
                    app.finish_migration):
        with pytest.raises(MigrationConflict, match="COPYING"):
            await control("c")
    app.core.pixels = PixelPolicy("off")
    with pytest.raises(FailedPrecondition, match="keeps no pixels"):
        await app.start_migration("c", OTHER_MODEL.model_name)
    assert store.records["c"].model == MODEL


async def test_a_collection_deleted_mid_copy_stops_its_migration(parts):
    app, store, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b", "c", "d", "e"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await app.migrations.step("c")
    await app.delete_collection("c")
    assert not await app.migrations.step("c")
    await app.create_collection("c", "")
    with pytest.raises(NotFound):
        await app.get_migration("c")
    assert replace(store.records["c"]).migration is None


async def test_one_large_copy_does_not_hold_up_the_others(parts):
    app, store, _, _ = parts
    await app.create_collection("big", "")
    await app.add_images("big", new(*(f"i{n:03d}" for n in range(40))))
    await app.create_collection("small", "")
    await app.add_images("small", new("a"))
    for name in ("big", "small"):
        await app.start_migration(name, OTHER_MODEL.model_name)
    order: list[str] = []
    step = app.migrations.step

    async def recorded(name: str) -> bool:
        order.append(name)
        return await step(name)
    app.migrations.step = recorded  # type: ignore[method-assign]
    await MigrationWorker(app.migrations).run_once()
    # Turns alternate while both have work: the small one's copy is done by its second turn.
    assert order[:4] == ["big", "small", "big", "small"]
    assert len(rows(store, store.records["small"])) == 1
