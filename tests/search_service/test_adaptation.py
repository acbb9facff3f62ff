"""The query adaptation as the service runs it, on the core's fakes: the fit's lifecycle, the
map applied to text queries only, and a map belonging to one model across a migration.
tests/search_service/test_adaptation_fit.py tests the fit itself; test_adaptation_e2e.py runs
the API on Milvus."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from imagesearch.errors import FailedPrecondition, NotFound
from search_service import adaptation, adaptation_fit, adaptation_space
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import (
    Adaptation,
    FitState,
    MigrationState,
    NewImage,
    Part,
    Query,
    StoredImage,
)
from search_service.migration import Migrations
from tests.search_service.fakes import (
    MODEL,
    OTHER_MODEL,
    FakeEmbedder,
    FakeStore,
    MemoryImages,
    unit,
)
from tests.search_service.test_migration import Clock, copy_all


@pytest.fixture
def parts():
    store, clock = FakeStore(), Clock()
    core = SearchCore(store, FakeEmbedder(extra=[OTHER_MODEL]), images=MemoryImages(),
                      record_ttl_s=0)
    migrations = Migrations(core, "worker-1", lease_s=30, settle_s=10, page=4, clock=clock)
    return SearchApp(core, migrations), store, clock


def image(n: int) -> NewImage:
    return NewImage(f"i{n:02d}", f"pixels {n}".encode(), {})


def vector_of(n: int) -> np.ndarray:
    return unit(f"pixels {n}".encode().hex())


async def with_images(app: SearchApp, name: str = "c", count: int = 20) -> None:
    await app.create_collection(name, "")
    await app.add_images(name, [image(n) for n in range(count)])


async def keep_map_to(app: SearchApp, text: str, n: int, name: str = "c") -> None:
    """Keeps (enabled) a map that sends the text's vector onto image n's."""
    matrix = np.outer(vector_of(n), unit("text:" + text)).astype(np.float32)
    fitted = adaptation_fit.Fitted(matrix, 40, 8, 0.5, 0.9)
    record = await app.core.store.get_collection(name)
    await adaptation_space.save(app.core.store, record, fitted, 200, True)


async def best(app: SearchApp, query: Query, name: str = "c") -> str:
    (result,) = await app.search(name, [query], 1, -1.0, [])
    return result.hits[0].external_id


async def enough_feedback(app: SearchApp, name: str = "c") -> None:
    """MIN_QUERIES text queries, each judging one image relevant and four not."""
    for q in range(adaptation.MIN_QUERIES):
        relevant = q % 20
        await app.record_feedback(name, Query(text=f"query {q}"), [f"i{relevant:02d}"],
                                  [f"i{(relevant + k) % 20:02d}" for k in range(1, 5)])


async def settled(app: SearchApp, name: str = "c") -> Adaptation:
    for _ in range(500):
        state = await app.get_adaptation(name)
        if state.state is not FitState.FITTING:
            return state
        await asyncio.sleep(0.01)
    raise AssertionError("the fit did not end")


@pytest.fixture
def held_fit(monkeypatch) -> Callable[[], None]:
    """Holds every fit on its worker thread until the returned function is called."""
    go = threading.Event()
    real = adaptation_fit.fit

    def waiting(*args, **kwargs):
        go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(adaptation.fitting, "fit", waiting)
    yield go.set
    go.set()


async def test_a_fit_with_too_little_feedback_is_refused_saying_what_is_needed(parts):
    app, _, _ = parts
    await with_images(app)
    await app.record_feedback("c", Query(text="a cat"), ["i01"], ["i02"])
    with pytest.raises(FailedPrecondition) as refused:
        await app.fit_adaptation("c", True)
    assert str(refused.value) == (
        "collection 'c' has 1 judged text queries with a relevant image and 2 judgements of "
        "text queries; an adaptation needs at least 40 and 200: record more feedback "
        "(RecordFeedback) on text queries first")
    assert await app.get_adaptation("c") == Adaptation()


async def test_a_fit_runs_in_the_background_and_keeps_a_new_version(parts):
    app, _, _ = parts
    await with_images(app)
    await enough_feedback(app)
    started = await app.fit_adaptation("c", True)
    assert started.state is FitState.FITTING
    done = await settled(app)
    assert (done.state, done.version, done.queries, done.judgements) == (
        FitState.DONE, 1, 40, 200)
    assert done.held_out > 0 and done.fitted_ms > 0
    assert (await app.get_collection("c")).adaptation == done  # in the collection's info
    await app.fit_adaptation("c", False)
    again = await settled(app)
    assert (again.version, again.enabled) == (2, False)


async def test_an_enabled_map_moves_text_queries_and_leaves_image_queries(parts):
    app, _, _ = parts
    await with_images(app)
    await keep_map_to(app, "the seventh", 7)
    assert await best(app, Query(text="the seventh")) == "i07"
    assert await best(app, Query(image=b"pixels 3")) == "i03"
    off = await app.set_adaptation_enabled("c", False)
    assert (off.version, off.enabled) == (1, False)
    assert await best(app, Query(text="the seventh")) != "i07"
    await app.set_adaptation_enabled("c", True)
    assert await best(app, Query(text="the seventh")) == "i07"
    await app.reset_adaptation("c")
    assert await app.get_adaptation("c") == Adaptation()
    assert await best(app, Query(text="the seventh")) != "i07"


async def test_a_query_may_skip_the_adaptation_alone_and_with_its_parts(parts):
    app, _, _ = parts
    await with_images(app)
    await keep_map_to(app, "the seventh", 7)
    plain = Query(text="the seventh", skip_adaptation=True)
    compound = Query(parts=(Part(Query(text="the seventh")),), skip_adaptation=True)
    mapped, skipped, skipped_parts = await app.search(
        "c", [Query(text="the seventh"), plain, compound], 20, -1.0, [])
    assert mapped.hits[0].external_id == "i07"
    by_id = {h.external_id: h.similarity for h in skipped.hits}
    assert by_id == pytest.approx({f"i{n:02d}": float(vector_of(n) @ unit("text:the seventh"))
                                   for n in range(20)}, abs=1e-5)
    assert {h.external_id: h.similarity for h in skipped_parts.hits} == pytest.approx(by_id)


async def test_switching_with_no_map_kept_is_refused_saying_how_to_get_one(parts):
    app, _, _ = parts
    await with_images(app)
    with pytest.raises(FailedPrecondition) as refused:
        await app.set_adaptation_enabled("c", True)
    assert str(refused.value) == ("collection 'c' has no fitted adaptation to switch: fit one "
                                  "first (FitAdaptation)")


async def test_after_a_migration_switch_the_old_models_map_is_not_applied(parts):
    app, store, clock = parts
    await with_images(app, count=4)
    await keep_map_to(app, "the second", 2)
    assert await best(app, Query(text="the second")) == "i02"  # the map is cached now
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    assert (await app.get_migration("c")).state is MigrationState.SWITCHED
    # The same search at once, inside the cache's lifetime: the new model's space, no map
    # (the old one, 8 x 8, would not even fit its 6 dimensions).
    (result,) = await app.search("c", [Query(text="the second")], 4, -1.0, [])
    text = unit(OTHER_MODEL.fingerprint + "text:the second", OTHER_MODEL.dimension)
    pixels = {f"i{n:02d}": unit(OTHER_MODEL.fingerprint + f"pixels {n}".encode().hex(),
                                OTHER_MODEL.dimension) for n in range(4)}
    assert [h.external_id for h in result.hits] == sorted(
        pixels, key=lambda i: -float(pixels[i] @ text))
    assert await app.get_adaptation("c") == Adaptation()
    # The old model's map stays for a rollback's sake, and goes with the old model.
    record = store.records["c"]
    old_map = adaptation_space.of(replace(record, model=MODEL)).model.fingerprint
    assert old_map in store.spaces[record.key]
    await app.finish_migration("c")
    assert old_map not in store.spaces[record.key]


async def test_a_fit_across_a_migration_switch_keeps_no_map(parts, held_fit):
    app, store, clock = parts
    await with_images(app)
    await enough_feedback(app)
    await app.fit_adaptation("c", True)
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    held_fit()
    began = replace(store.records["c"], model=MODEL, migration=None)
    for _ in range(500):
        if not app.fits.running(began):
            break
        await asyncio.sleep(0.01)
    assert await app.get_adaptation("c") == Adaptation()  # the new model's: none
    record = store.records["c"]
    assert adaptation_space.of(record).model.fingerprint not in store.spaces[record.key]
    assert (await app.rollback_migration("c")).state is MigrationState.ROLLED_BACK
    failed = await app.get_adaptation("c")
    assert (failed.state, failed.version) == (FitState.FAILED, 0)
    assert failed.fit_error == (
        "collection 'c' moved to another model while the fit ran; a map belongs to one "
        "model: fit again (FitAdaptation) on the feedback carried over")


async def test_reset_during_a_running_fit_stops_it_and_keeps_nothing(parts, held_fit):
    app, _, _ = parts
    await with_images(app)
    await enough_feedback(app)
    await app.fit_adaptation("c", True)
    await app.reset_adaptation("c")
    held_fit()
    await asyncio.sleep(0.05)
    assert await app.get_adaptation("c") == Adaptation()


def other_replica(store: FakeStore, clock: Clock) -> SearchApp:
    other = SearchCore(store, FakeEmbedder(extra=[OTHER_MODEL]), images=MemoryImages(),
                       record_ttl_s=0)
    return SearchApp(other, Migrations(other, "worker-2", lease_s=30, settle_s=10, page=4,
                                       clock=clock))


def lagging_reads(store: FakeStore, monkeypatch, row: str, stale: list[StoredImage],
                  times: int) -> None:
    """Session reads behind another replica's writes, as a Milvus server's may be: the next
    `times` reads of `row` that are not strong see `stale` (the row as it was)."""
    real = store.get

    async def get(collection, ids, with_vectors=False, strong=False):
        nonlocal times
        if strong or row not in ids or times == 0:
            return await real(collection, ids, with_vectors, strong)
        times -= 1
        return stale

    monkeypatch.setattr(store, "get", get)


async def test_a_reset_through_another_replica_stops_the_fit_before_it_keeps_a_map(
        parts, held_fit):
    app, store, clock = parts
    replica = other_replica(store, clock)
    await with_images(app)
    await enough_feedback(app)
    await app.fit_adaptation("c", True)  # runs on the first replica, held
    await replica.reset_adaptation("c")  # answered by the second
    held_fit()
    ended = await settled(app)
    assert (ended.state, ended.version) == (FitState.FAILED, 0)
    assert ended.fit_error == adaptation.RESET_DURING_FIT
    assert (await replica.get_adaptation("c")).version == 0
    # A fit begun after the reset keeps its map.
    await app.fit_adaptation("c", True)
    assert (await settled(app)).version == 1


async def test_a_reset_through_another_replica_is_seen_by_a_fit_whose_reads_lag(
        parts, held_fit, monkeypatch):
    app, store, clock = parts
    replica = other_replica(store, clock)
    await with_images(app)
    await enough_feedback(app)
    lagging_reads(store, monkeypatch, adaptation_space.RESET, [], times=1000)
    await app.fit_adaptation("c", True)
    await replica.reset_adaptation("c")
    held_fit()
    ended = await settled(app)
    assert (ended.state, ended.version, ended.fit_error) == (
        FitState.FAILED, 0, adaptation.RESET_DURING_FIT)


async def test_a_fit_begun_after_another_replicas_reset_keeps_its_map_though_reads_lag(
        parts, monkeypatch):
    app, store, clock = parts
    await with_images(app)
    await enough_feedback(app)
    await other_replica(store, clock).reset_adaptation("c")
    lagging_reads(store, monkeypatch, adaptation_space.RESET, [], times=1)  # ends in the fit
    await app.fit_adaptation("c", True)
    ended = await settled(app)
    assert (ended.state, ended.version, ended.fit_error) == (FitState.DONE, 1, "")


async def fitted_once(app: SearchApp) -> None:
    """A collection with images and enough feedback, its first map kept (version 1)."""
    await with_images(app)
    await enough_feedback(app)
    await app.fit_adaptation("c", True)
    assert (await settled(app)).version == 1


async def test_switching_through_a_replica_whose_reads_lag_keeps_the_newest_map(
        parts, monkeypatch):
    app, store, clock = parts
    await fitted_once(app)
    space = adaptation_space.of(await store.get_collection("c"))
    first = await store.get(space, [adaptation_space.HEADER], strong=True)
    await app.fit_adaptation("c", True)  # version 2 replaces version 1's rows
    assert (await settled(app)).version == 2
    lagging_reads(store, monkeypatch, adaptation_space.HEADER, first, times=1000)
    await other_replica(store, clock).set_adaptation_enabled("c", False)
    monkeypatch.undo()  # what every replica reads once the lag is over
    info, matrix = await adaptation_space.load(store, await store.get_collection("c"))
    assert (info.version, info.enabled, matrix is not None) == (2, False, True)


async def test_a_fit_through_a_replica_whose_reads_lag_is_the_next_version(parts, monkeypatch):
    app, store, clock = parts
    await fitted_once(app)
    replica = other_replica(store, clock)
    lagging_reads(store, monkeypatch, adaptation_space.HEADER, [], times=1000)
    await replica.fit_adaptation("c", True)
    assert (await settled(replica)).state is FitState.DONE
    monkeypatch.undo()
    record = await store.get_collection("c")
    info, matrix = await adaptation_space.load(store, record)
    assert (info.version, matrix is not None) == (2, True)
    kept = store.spaces[record.key][adaptation_space.of(record).model.fingerprint]
    assert len(kept) == record.model.dimension + 1  # the first fit's rows were dropped


async def test_a_reset_through_a_replica_whose_reads_lag_drops_the_newest_map(
        parts, monkeypatch):
    app, store, clock = parts
    await fitted_once(app)
    lagging_reads(store, monkeypatch, adaptation_space.HEADER, [], times=1000)
    await other_replica(store, clock).reset_adaptation("c")
    monkeypatch.undo()
    record = await store.get_collection("c")
    assert await adaptation_space.load(store, record) == (Adaptation(), None)
    assert not [r for r in store.spaces[record.key].get(
        adaptation_space.of(record).model.fingerprint, {}) if r != adaptation_space.RESET]


async def test_a_reset_landing_between_the_fits_check_and_its_switch_withdraws_the_map(
        parts, monkeypatch):
    app, _, _ = parts
    await with_images(app)
    await enough_feedback(app)
    real_publish = adaptation_space.publish

    async def reset_then_publish(store, record, *args):
        # Another replica's reset: a new token, its delete already run (nothing to delete).
        await store.upsert(adaptation_space.of(record), [adaptation_space.RESET],
                           np.eye(1, record.model.dimension, dtype=np.float32),
                           [{adaptation_space.TOKEN_KEY: "another"}])
        return await real_publish(store, record, *args)

    monkeypatch.setattr(adaptation.kept, "publish", reset_then_publish)
    await app.fit_adaptation("c", True)
    ended = await settled(app)
    assert (ended.state, ended.version, ended.fit_error) == (
        FitState.FAILED, 0, adaptation.RESET_DURING_FIT)
    record = await app.core.store.get_collection("c")
    assert await adaptation_space.load(app.core.store, record) == (Adaptation(), None)


async def test_a_second_fit_while_one_runs_reports_the_running_one(parts, held_fit):
    app, _, _ = parts
    await with_images(app)
    await enough_feedback(app)
    first = await app.fit_adaptation("c", True)
    second = await app.fit_adaptation("c", True)
    assert first == second and second.state is FitState.FITTING
    held_fit()
    assert (await settled(app)).version == 1


async def test_a_fit_during_the_collections_delete_keeps_nothing(parts, held_fit):
    app, store, _ = parts
    await with_images(app)
    await enough_feedback(app)
    await app.fit_adaptation("c", True)
    key = store.records["c"].key
    await app.delete_collection("c")
    held_fit()
    await asyncio.sleep(0.1)
    assert key not in store.spaces
    with pytest.raises(NotFound):
        await app.get_adaptation("c")
    await with_images(app)  # the name again: a new collection, with nothing of the old
    assert await app.get_adaptation("c") == Adaptation()


async def test_a_map_kept_before_fits_had_row_ids_of_their_own_still_applies(parts):
    app, store, _ = parts
    await with_images(app)
    record = await app.core.store.get_collection("c")
    matrix = np.outer(vector_of(3), unit("text:a red star")).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    units = matrix / np.where(norms > 0, norms, 1.0)[:, None]
    dimension = record.model.dimension
    header = {"version": 1, "enabled": True, "queries": 40, "judgements": 200, "fitted_ms": 1,
              "held_out": 8, "held_out_before": 0.5, "held_out_after": 0.9, "fit": "old"}
    await store.upsert(adaptation_space.of(record),
                       [f"m{i:05d}" for i in range(dimension)] + ["header"],
                       np.vstack([units, np.eye(1, dimension)]).astype(np.float32),
                       [*({"version": 1, "fit": "old", "norm": float(n)} for n in norms),
                        header])
    assert await best(app, Query(text="a red star")) == "i03"
    await app.reset_adaptation("c")
    assert await app.get_adaptation("c") == Adaptation()
    assert set(store.spaces[record.key][adaptation_space.of(record).model.fingerprint]) == {
        adaptation_space.RESET}


async def test_a_reset_after_a_finished_migration_leaves_the_old_model_without_rows(parts):
    app, store, clock = parts
    await with_images(app)
    await app.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(app, clock)
    await app.reset_adaptation("c")  # switched: both models' spaces get the token
    await app.finish_migration("c")
    await app.reset_adaptation("c")
    record = store.records["c"]
    old = adaptation_space.of(replace(record, model=MODEL, migration=None))
    assert old.model.fingerprint not in store.spaces[record.key]
    assert adaptation_space.of(record).model.fingerprint in store.spaces[record.key]
