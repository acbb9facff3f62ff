"""Hostile probes of migrations between models (issue 19), on the core's fakes: races of the
copy with writes and with controls, restarts, bad inputs. Each test states the promise it
attacks; those that once failed name the fix."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from imagesearch.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from search_service import evaluation
from search_service.application import SearchApp
from search_service.core import PixelPolicy, SearchCore
from search_service.domain import MigrationState, NewImage, Query
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
from tests.search_service.test_migration import (
    Clock,
    assert_space_holds,
    copy_all,
    new,
    rows,
)


@pytest.fixture
def parts():
    clock = Clock()
    store, embedder = FakeStore(clock), FakeEmbedder(extra=[OTHER_MODEL])
    core = SearchCore(store, embedder, images=MemoryImages(), record_ttl_s=0)
    migrations = Migrations(core, "worker-1", lease_s=30, settle_s=10, page=4, clock=clock)
    return SearchApp(core, migrations), store, embedder, clock


# Races of the copy with controls -------------------------------------------------------------


async def test_a_reconciliation_of_a_cancelled_migration_never_switches_the_next_one(parts):
    """Cancel, then start again to the same model, while the worker reconciles the first
    migration: the first one's end must not switch the second, whose copy has not begun (its
    target space was emptied by its start) - that would lose every image from searches."""
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new(*(f"i{n}" for n in range(6))))
    await app.start_migration("c", OTHER_MODEL.model_name)
    while await app.migrations.step("c"):
        pass
    clock.ms += 11_000
    migrations, reconcile = app.migrations, app.migrations._reconcile

    async def meanwhile(source, target, since_ms):
        skipped = await reconcile(source, target, since_ms)
        # A user's cancel and new start land while the worker was reconciling.
        await app.cancel_migration("c")
        clock.ms += 1
        await app.start_migration("c", OTHER_MODEL.model_name)
        return skipped
    migrations._reconcile = meanwhile  # type: ignore[method-assign]
    await migrations.step("c")
    migrations._reconcile = reconcile  # type: ignore[method-assign]
    migration = await app.get_migration("c")
    assert migration.state is MigrationState.COPYING, migration
    assert store.records["c"].model == MODEL
    await copy_all(app, clock)
    assert store.records["c"].model == OTHER_MODEL
    assert len(rows(store, store.records["c"])) == 6


async def test_a_page_of_a_cancelled_migration_does_not_move_the_next_ones_cursor(parts):
    """The page copy of migration 1 lands after cancel + start of migration 2: its progress
    (cursor, copied) must not be written into migration 2."""
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new(*(f"i{n}" for n in range(10))))
    await app.start_migration("c", OTHER_MODEL.model_name)
    core, real_embed = app.core, app.core.embed_images

    async def racing(record, data, remaining):
        core.embed_images = real_embed  # type: ignore[method-assign]
        await app.cancel_migration("c")
        clock.ms += 1
        await app.start_migration("c", OTHER_MODEL.model_name)
        return await real_embed(record, data, remaining)
    core.embed_images = racing  # type: ignore[method-assign]
    await app.migrations.step("c")
    migration = await app.get_migration("c")
    assert (migration.cursor, migration.copied) == ("", 0), migration
    await copy_all(app, clock)
    assert len(rows(store, store.records["c"])) == 10


async def test_a_grace_period_end_read_before_a_rollback_does_not_finish_the_next_one(parts):
    """The worker sees the grace period of migration 1 over, then (before it takes the lock)
    migration 1 is rolled back and migration 2 switched: migration 2's own grace period has
    not ended, so it must not be finished (dropping the rollback's vectors)."""
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name, grace_period_s=60)
    await copy_all(app, clock)
    clock.ms += 61_000
    migrations, lock = app.migrations, app.migrations.lock
    raced = False

    def racing_lock(name):
        nonlocal raced
        if not raced:
            raced = True
            # Rollback, new migration copied and switched, all in between.
            async def swap():
                await app.rollback_migration("c")
                clock.ms += 1
                await app.start_migration("c", OTHER_MODEL.model_name, grace_period_s=3600)
                await copy_all(app, clock)
            migrations.lock = lock  # type: ignore[method-assign]
            return _Before(swap(), lock(name))
        return lock(name)
    migrations.lock = racing_lock  # type: ignore[method-assign]
    await migrations.step("c")
    migrations.lock = lock  # type: ignore[method-assign]
    migration = await app.get_migration("c")
    assert migration.state is MigrationState.SWITCHED, migration
    assert rows(store, store.records["c"], MODEL) != {}


class _Before:
    """An async context manager that runs `first` before entering `inner`."""

    def __init__(self, first, inner) -> None:
        self.first, self.inner = first, inner

    async def __aenter__(self):
        await self.first
        return await self.inner.__aenter__()

    async def __aexit__(self, *exc):
        return await self.inner.__aexit__(*exc)


async def test_two_concurrent_starts_make_one_migration(parts):
    app, _, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a"))
    results = await asyncio.gather(
        app.start_migration("c", OTHER_MODEL.model_name),
        app.start_migration("c", OTHER_MODEL.fingerprint), return_exceptions=True)
    assert sum(isinstance(r, AlreadyExists) for r in results) == 1, results


async def test_cancel_then_start_again_copies_everything_afresh(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new(*(f"i{n}" for n in range(9))))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await app.migrations.step("c")
    await app.cancel_migration("c")
    await app.delete_images("c", ["i0"])  # only the source now
    clock.ms += 1
    started = await app.start_migration("c", OTHER_MODEL.model_name)
    assert (started.cursor, started.copied, started.total) == ("", 0, 8)
    await copy_all(app, clock)
    assert sorted(rows(store, store.records["c"])) == [f"i{n}" for n in range(1, 9)]


async def test_rollback_then_a_new_migration_then_finish(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    await app.rollback_migration("c")
    await app.add_images("c", new("c"))
    await app.delete_images("c", ["a"])
    clock.ms += 1
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    await app.finish_migration("c")
    record = store.records["c"]
    assert record.model == OTHER_MODEL and rows(store, record, MODEL) == {}
    assert sorted(rows(store, record)) == ["b", "c"]
    # And back again to the first model.
    clock.ms += 1
    await app.start_migration("c", MODEL.model_name)
    await copy_all(app, clock)
    assert store.records["c"].model == MODEL
    assert_space_holds(store, store.records["c"], {"b": b"pixels of b", "c": b"pixels of c"},
                       space=MODEL)


async def test_delete_and_recreate_mid_reconcile_does_not_switch_the_new_collection(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    while await app.migrations.step("c"):
        pass
    clock.ms += 11_000
    migrations, reconcile = app.migrations, app.migrations._reconcile

    async def meanwhile(source, target, since_ms):
        skipped = await reconcile(source, target, since_ms)
        await app.delete_collection("c")
        await app.create_collection("c", "")
        await app.add_images("c", new("x", "y"))
        clock.ms += 1
        await app.start_migration("c", OTHER_MODEL.model_name)
        return skipped
    migrations._reconcile = meanwhile  # type: ignore[method-assign]
    await migrations.step("c")
    migrations._reconcile = reconcile  # type: ignore[method-assign]
    assert (await app.get_migration("c")).state is MigrationState.COPYING
    assert store.records["c"].model == MODEL


# Races of the copy with writes ---------------------------------------------------------------


async def test_a_hot_image_rewritten_at_every_copy_attempt_is_right_in_the_end(parts):
    """An image rewritten (through the dual writes) while each of the copy's attempts embeds
    it: the copy's stale vector lands after the write's; the end of the migration must still
    hold the latest pixels in the target."""
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    core, real_embed = app.core, app.core.embed_images
    version = 0

    async def racing(record, data, remaining):
        nonlocal version
        embedded = await real_embed(record, data, remaining)
        if record.model == OTHER_MODEL and version < 5 and racing.copying:
            version += 1
            racing.copying = False
            await core.add_images("c", new("a", tag=f" v{version}"))
            racing.copying = True
        return embedded
    racing.copying = True  # type: ignore[attr-defined]
    core.embed_images = racing  # type: ignore[method-assign]
    await app.migrations.step("c")
    core.embed_images = real_embed  # type: ignore[method-assign]
    await copy_all(app, clock)
    assert store.records["c"].model == OTHER_MODEL
    latest = store.spaces[store.records["c"].key][MODEL.fingerprint]["a"]
    assert latest.metadata == {"n": "a"}
    assert_space_holds(store, store.records["c"], {"a": f"pixels of a v{version}".encode()})


async def test_a_late_write_timestamped_before_the_copys_is_not_lost_in_the_target(parts):
    """A write that read the record before the start (so it writes the source alone) takes
    its timestamp, then lands late - after the copy of the same image embedded the old pixels,
    wrote the target and checked the source. MilvusStore.upsert stamps `updated_at_ms` before
    its call, so the late row's stamp is older than the copy's: the reconciliation's "source
    newer than target" rule must still find it."""
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a"))
    stale = store.records["c"]
    await app.start_migration("c", OTHER_MODEL.model_name)
    core, real_embed = app.core, app.core.embed_images
    stamp = 0

    async def racing(record, data, remaining):
        nonlocal stamp
        core.embed_images = real_embed  # type: ignore[method-assign]
        # The late write: its pixels kept, its stamp taken; its row lands later.
        await core.images.put(stale.key, "pixels", [("a", b"pixels of a v2")])
        stamp = store.stamp()
        return await real_embed(record, data, remaining)
    core.embed_images = racing  # type: ignore[method-assign]
    await app.migrations.step("c")
    from search_service.domain import StoredImage
    store.spaces[stale.key][MODEL.fingerprint]["a"] = StoredImage(
        "a", {"n": "a"}, unit(b"pixels of a v2".hex()), stamp)
    await copy_all(app, clock)
    assert store.records["c"].model == OTHER_MODEL
    assert_space_holds(store, store.records["c"], {"a": b"pixels of a v2"})


async def test_delete_and_re_add_of_the_same_id_during_a_page(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b", "c"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    core, real_embed = app.core, app.core.embed_images

    async def racing(record, data, remaining):
        core.embed_images = real_embed  # type: ignore[method-assign]
        await core.delete_images("c", ["a", "b"])
        await core.add_images("c", new("a", tag=" reborn"))
        return await real_embed(record, data, remaining)
    core.embed_images = racing  # type: ignore[method-assign]
    await app.migrations.step("c")
    expected = {"a": b"pixels of a reborn", "c": b"pixels of c"}
    assert_space_holds(store, store.records["c"], expected)
    await copy_all(app, clock)
    assert_space_holds(store, store.records["c"], expected)
    assert_space_holds(store, store.records["c"], expected, space=MODEL)


async def test_a_delete_landing_after_finish_does_not_resurrect_in_a_later_migration(parts):
    """Writes that read the record in the grace period land in the old model's space after
    the finish dropped it; a later migration back to that model must not bring them back."""
    app, store, _, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    grace = store.records["c"]  # SWITCHED: writes land in the old space too
    await app.finish_migration("c")
    # An add that read the record in the grace period lands now, in both spaces.
    await store.upsert(grace, ["ghost"], np.stack([unit("ghost", OTHER_MODEL.dimension)]), [{}])
    await store.upsert(grace.shadow, ["ghost"], np.stack([unit("ghost")]), [{}])
    await app.delete_images("c", ["ghost", "a"])  # the user deletes it (the new space only)
    clock.ms += 1
    await app.start_migration("c", MODEL.model_name)
    await copy_all(app, clock)
    assert sorted(rows(store, store.records["c"], MODEL)) == ["b"]


# Models that go away -------------------------------------------------------------------------


async def test_an_add_while_the_target_model_is_no_longer_served_says_what_to_do(parts):
    """The embedder restarted without the target model mid-migration: an add cannot land in
    both spaces, so it fails - with a message that names the migration (cancel it, or serve
    the target again), not one claiming the collection uses the target."""
    app, _, embedder, _ = parts
    await app.create_collection("c", "")
    await app.start_migration("c", OTHER_MODEL.model_name)
    embedder.extra = []
    with pytest.raises(FailedPrecondition) as raised:
        await app.add_images("c", new("a"))
    message = str(raised.value)
    assert "CancelMigration" in message or "cancel" in message.lower(), message
    assert f"uses model {OTHER_MODEL.model_name}" not in message, message
    # Searches and deletes go on under the source.
    await app.search("c", [Query(text="x")], 1, -1.0, [])
    await app.delete_images("c", ["a"])


async def test_an_add_in_the_grace_period_without_the_old_model_says_what_to_do(parts):
    """After the switch, the old model's bundle removed from the embedder (a natural step):
    adds fail until the grace period ends (writes still land in the old space). The message
    must say so (FinishMigration), not claim the collection uses the old model."""
    app, _, embedder, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    embedder.serving, embedder.extra = OTHER_MODEL, []
    with pytest.raises(FailedPrecondition) as raised:
        await app.add_images("c", new("b"))
    message = str(raised.value)
    assert "FinishMigration" in message, message
    assert f"uses model {MODEL.model_name}" not in message, message


async def test_a_target_model_gone_mid_copy_fails_the_migration_and_resume_retries(parts):
    app, store, embedder, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    embedder.extra = []
    await MigrationWorker(app.migrations).run_once()
    failed = await app.get_migration("c")
    assert failed.state is MigrationState.FAILED and failed.error
    embedder.extra = [OTHER_MODEL]
    await app.resume_migration("c")
    clock.ms += 11_000
    await MigrationWorker(app.migrations).run_once()
    assert (await app.get_migration("c")).state is MigrationState.SWITCHED
    assert sorted(rows(store, store.records["c"])) == ["a", "b"]


async def test_a_target_that_refuses_some_images_holds_the_switch_with_their_ids(parts):
    """The refusal says "add them again, or switch with force"; an image that is deleted
    (or added again with pixels the target takes) is no longer missing: the unforced switch
    must then go through (it once kept refusing on the stale count)."""
    app, store, embedder, clock = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b", "c"))
    embedder.refuses[OTHER_MODEL.fingerprint] = {b"pixels of b"}
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    held = await app.get_migration("c")
    assert (held.state, held.skipped, held.skipped_ids) == (MigrationState.COPIED, 1, ("b",))
    with pytest.raises(MigrationConflict, match=r"could not be copied \(first: b"):
        await app.switch_migration("c")
    await app.delete_images("c", ["b"])
    # Gone from the source: nothing is missing any more; the switch is allowed unforced.
    assert (await app.switch_migration("c")).state is MigrationState.SWITCHED
    assert sorted(rows(store, store.records["c"])) == ["a", "c"]


async def test_images_without_pixels_added_again_let_the_switch_through(parts):
    app, store, _, clock = parts
    app.core.pixels = PixelPolicy("off")
    await app.create_collection("c", "")
    await app.add_images("c", new("old1", "old2"))
    app.core.pixels = PixelPolicy()
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    assert (await app.get_migration("c")).state is MigrationState.COPIED
    await app.add_images("c", new("old1"))
    with pytest.raises(MigrationConflict, match=r"1 images .*first: old2"):
        await app.switch_migration("c")
    await app.add_images("c", new("old2"))
    assert (await app.switch_migration("c")).state is MigrationState.SWITCHED
    assert sorted(rows(store, store.records["c"])) == ["old1", "old2"]


# Odd ids, many pages ---------------------------------------------------------------------------


async def test_unicode_and_near_ids_are_all_copied_across_pages(parts):
    app, store, _, clock = parts
    await app.create_collection("c", "")
    ids = ["a", "a ", "a!", "a\u00e9", "a\U0001f600", "A", "\u00e9", "z" * 256, "0", "00",
           "a.b", "a-b", "\u4e2d\u6587", "\ufeffbom", "a" * 255 + "b", "~tilde"]
    await app.add_images("c", new(*ids))
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    assert store.records["c"].model == OTHER_MODEL
    assert sorted(rows(store, store.records["c"])) == sorted(ids)
    assert (await app.get_migration("c")).copied == len(ids)


# Bad inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["x" * 257, "bad\x00name", "line\nbreak", "tab\tname"])
async def test_hostile_model_names_are_refused_clearly(parts, model):
    app, _, _, _ = parts
    with pytest.raises(InvalidArgument, match="ListModels") as raised:
        await app.create_collection("c", "", model=model)
    assert len(str(raised.value)) < 300
    await app.create_collection("d", "")
    with pytest.raises(InvalidArgument, match="ListModels"):
        await app.start_migration("d", model)


@pytest.mark.parametrize("model", ["y" * 256, "\u202eevil", "a'\"quote"])
async def test_a_model_name_not_served_is_not_found_and_names_the_served(parts, model):
    """Format characters (a right-to-left override) are allowed in a name, but the message
    shows them escaped."""
    app, _, _, _ = parts
    with pytest.raises(NotFound, match="other-model") as raised:
        await app.create_collection("c", "", model=model)
    assert "\u202e" not in str(raised.value)


async def test_grace_period_bounds(parts):
    app, _, _, _ = parts
    await app.create_collection("c", "")
    for bad in (-1, 30 * 86_400 + 1, 2 ** 40):
        with pytest.raises(InvalidArgument, match="grace_period_seconds"):
            await app.start_migration("c", OTHER_MODEL.model_name, grace_period_s=bad)


async def test_a_migration_of_a_missing_collection_is_not_found(parts):
    app, _, _, _ = parts
    with pytest.raises(NotFound):
        await app.start_migration("missing", OTHER_MODEL.model_name)
    with pytest.raises(InvalidArgument):
        await app.start_migration("Bad Name", OTHER_MODEL.model_name)


# Evaluation ----------------------------------------------------------------------------------


def test_leave_one_out_never_counts_an_image_as_its_own_neighbour():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(12, 6)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [str(i) for i in range(12)]  # every image its own label: nothing to find
    assert evaluation.retrieval(vectors, labels) == (0.0, 0.0, 0.0)


async def test_evaluation_refuses_out_of_range_sizes_and_unknown_models(parts):
    app, _, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage(f"i{n}", f"p{n}".encode(), {"label": f"l{n % 2}"})
                               for n in range(6)])
    for bad in (1, evaluation.MAX_IMAGES + 1, -5):
        with pytest.raises(InvalidArgument, match="max_images"):
            await evaluation.evaluate(app.core, "c", "label", [], bad)
    with pytest.raises(NotFound, match="not served"):
        await evaluation.evaluate(app.core, "c", "label", ["nope"], 0)
    report = await evaluation.evaluate(app.core, "c", "label", [], 0)
    assert {e.space for e in report.evaluations} == {MODEL, OTHER_MODEL}
    assert all(e.images == 6 for e in report.evaluations)


async def test_evaluation_reads_a_bounded_number_of_rows(parts):
    """EvaluateModels' cost must be bounded by what it is asked for: a collection with a few
    labelled images among many unlabelled ones must not be read to its end (it was: the
    sample was drawn by reading every row's metadata until enough labelled ones were found;
    on a collection of millions with few labels, a full scan per call). Fixed: the
    first max_images x SCAN_FACTOR images are read, and too few labels there is refused."""
    app, store, _, _ = parts
    await app.create_collection("c", "")
    for start in range(0, 3000, 250):
        await app.add_images("c", [NewImage(f"u{n:05d}", b"p", {})
                                   for n in range(start, start + 250)])
    await app.add_images("c", [NewImage(f"z{n}", f"q{n}".encode(), {"label": f"l{n % 2}"})
                               for n in range(4)])
    reads = 0
    real = store.list_images

    async def counted(*args, **kwargs):
        nonlocal reads
        page = await real(*args, **kwargs)
        reads += len(page)
        return page
    store.list_images = counted  # type: ignore[method-assign]
    with pytest.raises(FailedPrecondition, match="among the first 80 images"):
        await evaluation.evaluate(app.core, "c", "label", [], 4)
    assert reads <= 4 * evaluation.SCAN_FACTOR + evaluation.check.MAX_PAGE, reads


async def test_a_stale_worker_step_after_delete_and_recreate_is_quiet(parts):
    """A worker step that read a deleted collection's migration and lands its progress after
    the name was created again (no migration) must simply stop, not raise NotFound."""
    app, _, _, _ = parts
    await app.create_collection("c", "")
    await app.add_images("c", new("a", "b"))
    await app.start_migration("c", OTHER_MODEL.model_name)
    core, real_embed = app.core, app.core.embed_images

    async def racing(record, data, remaining):
        core.embed_images = real_embed  # type: ignore[method-assign]
        await app.delete_collection("c")
        await app.create_collection("c", "")
        return await real_embed(record, data, remaining)
    core.embed_images = racing  # type: ignore[method-assign]
    assert not await app.migrations.step("c")
    with pytest.raises(NotFound):
        await app.get_migration("c")
