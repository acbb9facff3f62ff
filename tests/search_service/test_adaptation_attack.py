"""Attacks, by an outside review, on "a reset made through any replica stops every fit begun
before it, and a fit begun after a reset keeps its map". Two SearchApp replicas share one
FakeStore; a replica's store may be wrapped to pause at chosen writes (a slow network, a GC
pause). What the store cannot promise without compare-and-set - a fit whose header write is
delayed past a reset and a later fit's whole run - is recorded in search_service.adaptation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imagesearch.errors import FailedPrecondition
from search_service import adaptation, adaptation_space
from search_service.application import SearchApp
from search_service.core import SearchCore
from search_service.domain import Adaptation, FitState, MigrationState
from search_service.migration import Migrations
from tests.search_service.fakes import OTHER_MODEL, FakeEmbedder, FakeStore, MemoryImages
from tests.search_service.test_adaptation import (  # noqa: F401  (fixture)
    enough_feedback,
    held_fit,
    settled,
    with_images,
)
from tests.search_service.test_migration import Clock, copy_all


class Gate:
    """Pauses a replica's store call until opened; `reached` is set once it waits."""

    def __init__(self) -> None:
        self.reached, self.open = asyncio.Event(), asyncio.Event()

    async def hold(self) -> None:
        self.reached.set()
        await self.open.wait()


class PausingStore:
    """The shared store as one replica sees it, with gates on the adaptation map's writes."""

    def __init__(self, inner: FakeStore) -> None:
        self.inner = inner
        self.before_map_upsert: Gate | None = None   # a fit's save, before it lands
        self.in_flight_upsert: Gate | None = None    # a save already sent: lands even if cancelled

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def upsert(self, collection, ids, vectors, metadata) -> None:
        if any(":m" in i for i in ids):  # a fit's map rows (its header follows)
            if self.before_map_upsert is not None:
                gate, self.before_map_upsert = self.before_map_upsert, None
                await gate.hold()
            if self.in_flight_upsert is not None:
                gate, self.in_flight_upsert = self.in_flight_upsert, None

                async def lands_later() -> None:  # run_in_executor: a cancel does not stop it
                    await gate.hold()
                    await self.inner.upsert(collection, ids, vectors, metadata)

                self.landed = asyncio.ensure_future(lands_later())
                await asyncio.shield(self.landed)
                return
        await self.inner.upsert(collection, ids, vectors, metadata)

def replica(store: Any, clock: Clock, worker: str) -> SearchApp:
    core = SearchCore(store, FakeEmbedder(extra=[OTHER_MODEL]), images=MemoryImages(),
                      record_ttl_s=0)
    return SearchApp(core, Migrations(core, worker, lease_s=30, settle_s=10, page=4,
                                      clock=clock))


@pytest.fixture
def two():
    shared, clock = FakeStore(), Clock()
    a_store = PausingStore(shared)
    return replica(a_store, clock, "worker-1"), replica(shared, clock, "worker-2"), a_store, \
        clock


async def kept_version(app: SearchApp) -> tuple[int, bool]:
    """(version, whether a whole map is kept) as the store has it."""
    record = await app.core.store.get_collection("c")
    info, matrix = await adaptation_space.load(app.core.store, record)
    return info.version, matrix is not None


async def test_a_fit_begun_after_a_reset_keeps_its_map_though_an_older_fit_saves_late(two):
    """F1 (replica A) passes its check, stalls before its upsert; reset and F2 (begun after
    it) run on replica B; F1's upsert lands over F2's map, then F1 withdraws 'its own' rows:
    F2's map is gone though F2 began after the reset and reports DONE."""
    a, b, a_store, _ = two
    await with_images(a)
    await enough_feedback(a)
    a_store.before_map_upsert = gate = Gate()
    await a.fit_adaptation("c", True)                      # F1, on A
    await asyncio.wait_for(gate.reached.wait(), 10)        # checked, not yet saved
    await b.reset_adaptation("c")
    await b.fit_adaptation("c", True)                      # F2, begun after the reset
    assert (await settled(b)).state is FitState.DONE
    assert await kept_version(b) == (1, True)
    gate.open.set()
    assert (await settled(a)).fit_error == adaptation.RESET_DURING_FIT
    assert await kept_version(b) != (0, False), "F2's map (begun after the reset) was lost"


async def test_a_fit_asked_for_after_a_remote_reset_is_not_the_doomed_old_one(
        two, held_fit):  # noqa: F811  (the fixture)
    """FitAdaptation through A after a reset through B answers FITTING - but it is the fit
    begun before the reset, which then fails: the fit asked for after the reset keeps
    nothing."""
    a, b, _, _ = two
    await with_images(a)
    await enough_feedback(a)
    await a.fit_adaptation("c", True)                      # F1, held on its thread
    await b.reset_adaptation("c")
    asked = await a.fit_adaptation("c", True)              # asked for after the reset
    assert asked.state is FitState.FITTING
    held_fit()
    ended = await settled(a)
    assert (ended.state, ended.version) == (FitState.DONE, 1), ended


async def test_a_reset_during_a_switched_migration_stops_a_fit_that_rolls_back(
        two, held_fit):  # noqa: F811  (the fixture)
    """F1 begins on model A; the migration switches to B; a reset (through another replica);
    a rollback to A; F1 then keeps its map on A, though it began before the reset."""
    a, b, _, clock = two
    await with_images(a)
    await enough_feedback(a)
    await a.fit_adaptation("c", True)                      # F1 on MODEL, held
    await a.start_migration("c", OTHER_MODEL.model_name)
    await copy_all(a, clock)
    assert (await a.get_migration("c")).state is MigrationState.SWITCHED
    await b.reset_adaptation("c")
    assert (await a.rollback_migration("c")).state is MigrationState.ROLLED_BACK
    held_fit()
    ended = await settled(a)
    assert ended.version == 0, f"a fit begun before the reset kept its map: {ended}"


async def test_a_local_reset_stops_a_fit_whose_save_is_in_flight(two):
    """Reset through the replica running the fit while its save is on the wire (a pymilvus
    call on an executor thread: cancelling the task does not stop it)."""
    a, _, a_store, _ = two
    await with_images(a)
    await enough_feedback(a)
    a_store.in_flight_upsert = flight = Gate()
    await a.fit_adaptation("c", True)
    await asyncio.wait_for(flight.reached.wait(), 10)
    await a.reset_adaptation("c")
    flight.open.set()
    await a_store.landed
    await asyncio.sleep(0.05)
    assert await kept_version(a) == (0, False), "the map outlived the reset"


async def test_a_reset_with_no_map_leaves_what_is_reported_as_it_was(two):
    """A reset now writes a token row even where no map was ever kept."""
    a, b, _, clock = two
    await with_images(a)
    before = await a.get_collection("c")
    await b.reset_adaptation("c")
    await b.reset_adaptation("c")
    assert await a.get_adaptation("c") == Adaptation()
    assert await a.get_collection("c") == before
    with pytest.raises(FailedPrecondition, match="no fitted adaptation"):
        await a.set_adaptation_enabled("c", True)
    await a.start_migration("c", OTHER_MODEL.model_name)
    await b.reset_adaptation("c")                          # mid-migration, both models
    await copy_all(a, clock)
    await b.reset_adaptation("c")
    await a.finish_migration("c")
    assert await b.get_adaptation("c") == Adaptation()
    await a.delete_collection("c")
    assert a.core.store.inner.spaces == {}
