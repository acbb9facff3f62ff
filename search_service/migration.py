"""Moving a collection to another model without downtime.

A migration lives in the collection's record (`CollectionRecord.migration`), so every process
sees it and a restarted one carries on where the copy stood:

1. **Start**: the target's space under the collection's key is emptied (of anything an
   earlier, abandoned migration left), and the record says COPYING. From then on every write
   lands in both spaces (`CollectionRecord.shadow`, search_service.core): an image is embedded
   by both models before anything is written, and deleted from the source first.
2. **Copy**, in the background (`MigrationWorker`): the source's images a page at a time in id
   order, each embedded again from its kept pixels (search_service.core.PIXELS_KIND) into the
   target, the cursor saved after each page. Each page is checked after it lands: an image
   written or deleted since the page was read is copied again, or deleted from the target.
3. **Reconcile**, once the cursor reaches the end and every write that began before the start
   has had time to land (`settle_s`): the two spaces are compared id by id - an image missing
   from the target, written to the source after its copy, or written at all since the start
   less `settle_s` (stamps are writers' clocks, taken before a write lands, so a late write
   can look older than the copy) is copied again, and one the source no longer has is
   deleted; passes repeat until one finds nothing. Class names and the feedback whose query
   can be embedded again (a text, an indexed image) are carried.
4. **Switch**: one record write makes the target the collection's model (SWITCHED). Searches
   use one model per call, so no result ever mixes spaces. Writes still land in both, so that
   a rollback (within the grace period) loses nothing.
5. **Finish** when the grace period ends (or at once, FinishMigration): the source's vectors
   are deleted. Cancel (before the switch) and rollback (after it) delete the target's.

Images without kept pixels cannot be copied: they are counted (`skipped`), and the switch waits
in COPIED unless the migration was started with `force`.

Milvus has no transactions: the controls and the worker serialise their record writes per
collection within a process, and re-read the record before each; across replicas the worker's
claim (`worker`, `lease_until_ms`) keeps one copier per collection, and a control landing on
another replica within the few milliseconds of a progress write can be overwritten (the
caller sees the state it got back, and may repeat the call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from imagesearch.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from search_service import adaptation_space, class_names, feedback, feedback_space
from search_service import validation as check
from search_service.core import SearchCore
from search_service.domain import (
    BEFORE_SWITCH,
    CollectionRecord,
    Migration,
    MigrationState,
    Outcome,
    StoredImage,
)
from search_service.errors import CollectionNotFound, MigrationConflict

log = logging.getLogger(__name__)

# Images embedded again per step of the copy: one embedder call, one write, one saved cursor.
PAGE = 64
# Reconciliation passes at most (each copies what the one before could not settle).
PASSES = 5
# Ids of images the copy skipped, kept in the record for an operator.
MAX_SKIPPED_IDS = 20
DEFAULT_GRACE_S = 86_400
_STATES = {state: state.name for state in MigrationState}


def _now_ms() -> int:
    return int(time.time() * 1000)


class Migrations:
    """The controls (start, pause, resume, cancel, switch, rollback, finish) and the copy."""

    def __init__(self, core: SearchCore, worker: str, lease_s: float = 30.0,
                 settle_s: float = 30.0, page: int = PAGE,
                 clock: Callable[[], int] = _now_ms) -> None:
        self.core = core
        self.worker = worker
        self.lease_ms = int(lease_s * 1000)
        self.settle_ms = int(settle_s * 1000)
        self.page = page
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        # Woken by a start or a resume, so the worker does not wait for its next poll.
        self.wake = asyncio.Event()

    # Controls ----------------------------------------------------------------------------

    async def start(self, name: str, model: str, switch_when_copied: bool = True,
                    grace_period_s: int = DEFAULT_GRACE_S, force: bool = False,
                    remaining: float | None = None) -> Migration:
        check.check_collection_name(name)
        check.check_grace_period(grace_period_s)
        if not model:
            raise InvalidArgument("name the model to move to (ListModels)")
        if self.core.images is None or self.core.pixels.keep == "off":
            raise FailedPrecondition(
                "this service keeps no pixels to embed images again from (SEARCH_IMAGE_STORE "
                "or SEARCH_KEEP_PIXELS is off): a migration cannot copy the collection")
        target = await self.core.served_model(model, remaining)
        async with self.lock(name):
            record = await self.core.store.get_collection(name)
            if record.model == target:
                raise InvalidArgument(f"collection {name!r} already uses model "
                                      f"{target.model_name} ({target.fingerprint})")
            if record.migration is not None and record.migration.state in (
                    BEFORE_SWITCH | {MigrationState.SWITCHED}):
                raise AlreadyExists(
                    f"collection {name!r} has a migration to "
                    f"{record.migration.target.model_name} in state "
                    f"{_STATES[record.migration.state]}: cancel or finish it first")
            # What an abandoned migration to the same model may have left.
            await self._drop(replace(record, model=target))
            (total,) = await self.core.store.counts([record])
            # Later than the last migration's start: the start names the migration (`same`).
            now = max(self.now(), record.migration.created_at_ms + 1
                      if record.migration is not None else 0)
            migration = Migration(record.model, target, MigrationState.COPYING, now, now,
                                  switch_when_copied, grace_period_s, force, total=total)
            await self.write(replace(record, migration=migration))
        self.wake.set()
        return migration

    async def get(self, name: str) -> Migration:
        record = await self.core.store.get_collection(check.check_collection_name(name))
        if record.migration is None:
            raise NotFound(f"collection {name!r} has never had a migration")
        return record.migration

    async def pause(self, name: str) -> Migration:
        return await self._control(name, {MigrationState.COPYING}, MigrationState.PAUSED)

    async def resume(self, name: str) -> Migration:
        migration = await self._control(name, {MigrationState.PAUSED, MigrationState.FAILED},
                                        MigrationState.COPYING)
        self.wake.set()
        return migration

    async def cancel(self, name: str) -> Migration:
        async with self.lock(name):
            record, migration = await self.current(name, BEFORE_SWITCH, "cancel",
                                                    "use RollbackMigration after a switch")
            ended = replace(migration, state=MigrationState.CANCELLED, updated_at_ms=self.now())
            await self.write(replace(record, migration=ended))
        await self._drop(replace(record, model=migration.target))
        return ended

    async def switch(self, name: str, force: bool = False) -> Migration:
        async with self.lock(name):
            record, migration = await self.current(
                name, {MigrationState.COPIED}, "switch",
                "a switch follows a complete copy (state COPIED)")
            if migration.skipped and not (force or migration.force):
                migration = await self._still_missing(record, migration)
            if migration.skipped and not (force or migration.force):
                raise MigrationConflict(
                    f"{migration.skipped} images of collection {name!r} could not be copied "
                    f"(first: {', '.join(migration.skipped_ids[:5])}): add them again, or "
                    "switch with force (they will be missing under the new model)")
            return await self._switch(record, migration)

    async def _still_missing(self, record: CollectionRecord, migration: Migration
                             ) -> Migration:
        """The migration with its skipped images looked at again, where it lists them all: one
        added again since (now in the target) or deleted (gone from the source) is no longer
        missing - as the refusal's advice ("add them again") promises."""
        if migration.skipped != len(migration.skipped_ids):
            return migration  # more than the record lists: only a new copy can tell
        ids = list(migration.skipped_ids)
        target = replace(record, model=migration.target, migration=None)
        present = {i.external_id for i in await self.core.store.get(target, ids)}
        source = {i.external_id for i in await self.core.store.get(record, ids)}
        return _with_skipped(migration, [i for i in ids if i in source and i not in present],
                             replace_all=True)

    async def rollback(self, name: str) -> Migration:
        async with self.lock(name):
            record, migration = await self.current(
                name, {MigrationState.SWITCHED}, "roll back",
                "a rollback is possible in the grace period after a switch")
            ended = replace(migration, state=MigrationState.ROLLED_BACK,
                            updated_at_ms=self.now())
            await self.write(replace(record, model=migration.source, migration=ended))
        await self._drop(replace(record, model=migration.target))
        return ended

    async def finish(self, name: str) -> Migration:
        async with self.lock(name):
            record, migration = await self.current(
                name, {MigrationState.SWITCHED}, "finish",
                "a migration finishes after its switch")
            return await self._finish(record, migration)

    # The copy ----------------------------------------------------------------------------

    async def step(self, name: str) -> bool:
        """Moves the collection's migration on by one step where this worker may: a page of
        the copy, the reconciliation and switch, or the end of a grace period. False when
        there is nothing (more) to do for now."""
        try:
            record = await self.core.store.get_collection(name)
        except CollectionNotFound:
            return False
        migration = record.migration
        if migration is None:
            return False
        now = self.now()
        if migration.state is MigrationState.SWITCHED:
            if now < migration.grace_ends_at_ms:
                return False
            with contextlib.suppress(CollectionNotFound, MigrationConflict):
                async with self.lock(name):
                    record, migration = await self.current(
                        name, {MigrationState.SWITCHED}, "", "", same=(record, migration))
                    await self._finish(record, migration)
            return False
        if migration.state is not MigrationState.COPYING:
            return False
        if migration.worker not in ("", self.worker) and migration.lease_until_ms > now:
            return False  # another replica copies it
        try:
            return await self._copy_step(record, migration)
        except (CollectionNotFound, MigrationConflict):
            return False

    async def _copy_step(self, record: CollectionRecord, migration: Migration) -> bool:
        source, target = record, replace(record, model=migration.target, migration=None)
        page = await self.core.store.list_images(source, self.page, migration.cursor)
        if page:
            copied, skipped = await self._copy(source, target, page)
            await self._progress(record, migration, cursor=page[-1].external_id,
                                 copied=copied, skipped=skipped)
            return True
        if self.now() < migration.created_at_ms + self.settle_ms:
            # Writes that read the record before the start may still be landing.
            await self._progress(record, migration)
            return False
        skipped = await self._reconcile(source, target,
                                        migration.created_at_ms - self.settle_ms)
        await class_names.carry(self.core, source, target)
        await feedback.carry(self.core, source, target)
        async with self.lock(record.name):
            # The same migration still: a cancel and a new start (or a deletion and a new
            # collection) meanwhile must not have their copy switched by this one's end.
            record, migration = await self.current(record.name, {MigrationState.COPYING},
                                                    "", "", same=(record, migration))
            migration = _with_skipped(migration, skipped, replace_all=True)
            if migration.switch_when_copied and (not migration.skipped or migration.force):
                await self._switch(record, migration)
            else:
                await self.write(replace(record, migration=replace(
                    migration, state=MigrationState.COPIED, updated_at_ms=self.now())))
        return False

    async def _copy(self, source: CollectionRecord, target: CollectionRecord,
                    page: list[StoredImage]) -> tuple[int, list[str]]:
        """Embeds the page again into the target; checks it against the source after it
        landed, and copies again what was written meanwhile. Returns how many were copied
        and the ids that could not be."""
        copied, skipped = 0, set[str]()
        for attempt in range(3):
            pixels = await self.core.kept_pixels(source, [i.external_id for i in page])
            ready = [image for image in page if image.external_id in pixels]
            missing = {image.external_id for image in page if image.external_id not in pixels}
            embedded = await self.core.embed_images(
                target, [pixels[i.external_id] for i in ready], None) if ready else []
            landed = []
            for image, vector in zip(ready, embedded, strict=True):
                if isinstance(vector, Outcome):
                    missing.add(image.external_id)
                else:
                    landed.append((image, vector))
            if landed:
                await self.core.store.upsert(
                    target, [i.external_id for i, _ in landed],
                    np.stack([v for _, v in landed]), [i.metadata for i, _ in landed])
            if attempt == 0:
                copied = len(landed)
            # Copied again: no longer skipped (re-added with pixels meanwhile) unless missing.
            skipped = (skipped - {i.external_id for i in page}) | missing
            # Written (or deleted) through the source since the page was read?
            now = {i.external_id: i for i in await self.core.store.get(
                source, [i.external_id for i in page])}
            gone = [i.external_id for i in page if i.external_id not in now]
            if gone:
                await self.core.store.delete(target, gone)
            skipped -= set(gone)
            page = [now[i.external_id] for i in page if i.external_id in now
                    and now[i.external_id].updated_at_ms != i.updated_at_ms]
            if not page:
                break
        else:
            # Written again during every attempt: the last copy may have landed after the
            # newest write. Gone from the target, it is copied afresh by the reconciliation
            # (or, by the last one, counted as skipped).
            await self.core.store.delete(target, [i.external_id for i in page])
            skipped |= {i.external_id for i in page}
        return copied, sorted(skipped)

    async def _reconcile(self, source: CollectionRecord, target: CollectionRecord,
                         since_ms: int) -> list[str]:
        """Copies again what the target lacks, holds older than the source, or what was
        written to the source since `since_ms` (the start, less the time a write that began
        before it may take); deletes what the source no longer has. Row stamps are the
        writers' clocks, taken before a write lands: a write that read the record before the
        start and landed after the copy checked its page can carry an older stamp than the
        copy's, so every row written around the migration is embedded again, whatever its
        stamp says. Passes repeat until one finds nothing to do; returns the ids that could
        not be copied (no kept pixels, refused, or rewritten at every attempt)."""
        skipped: list[str] = []
        for attempt in range(PASSES):
            theirs = {i.external_id: i.updated_at_ms for i in await self._every(target)}
            stale: list[StoredImage] = []
            for image in await self._every(source):
                at = theirs.pop(image.external_id, None)
                if (at is None or image.updated_at_ms > at
                        or (attempt == 0 and image.updated_at_ms >= since_ms)):
                    stale.append(image)
            extra = sorted(theirs)
            for start in range(0, len(extra), check.MAX_IDS):
                await self.core.store.delete(target, extra[start:start + check.MAX_IDS])
            skipped = []
            for start in range(0, len(stale), self.page):
                _, missed = await self._copy(source, target, stale[start:start + self.page])
                skipped += missed
            if len(skipped) == len(stale) and not extra:
                break  # nothing more a pass can copy
        # Those a write has since put in both spaces are copied after all.
        held = {i.external_id for i in await self.core.store.get(target, skipped)}
        return [i for i in skipped if i not in held]

    async def _every(self, record: CollectionRecord) -> list[StoredImage]:
        found: list[StoredImage] = []
        while True:
            page = await self.core.store.list_images(
                record, check.MAX_PAGE, found[-1].external_id if found else "")
            found += page
            if len(page) < check.MAX_PAGE:
                return found

    # Record writes -----------------------------------------------------------------------

    def now(self) -> int:
        return self._clock()

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def current(self, name: str, allowed: set[MigrationState] | frozenset[MigrationState],
                       verb: str, hint: str,
                       same: tuple[CollectionRecord, Migration] | None = None,
                       ) -> tuple[CollectionRecord, Migration]:
        """The collection's record and migration now, in one of the `allowed` states; with
        `same` (for the worker), still the migration it read then: the same collection (key)
        and the same start - or MigrationConflict, so the worker drops what it was doing."""
        record = await self.core.store.get_collection(check.check_collection_name(name))
        migration = record.migration
        if same is not None and (
                migration is None or record.key != same[0].key
                or migration.created_at_ms != same[1].created_at_ms
                or migration.target != same[1].target
                or (migration.state is MigrationState.SWITCHED
                    and self.now() < migration.grace_ends_at_ms)):
            raise MigrationConflict(f"the migration of collection {name!r} changed meanwhile")
        if migration is None:
            raise NotFound(f"collection {name!r} has no migration")
        if migration.state not in allowed:
            raise MigrationConflict(
                f"cannot {verb or 'continue'} the migration of collection {name!r}: it is "
                f"{_STATES[migration.state]}" + (f"; {hint}" if hint else ""))
        return record, migration

    async def _control(self, name: str, allowed: set[MigrationState],
                       to: MigrationState) -> Migration:
        async with self.lock(name):
            record, migration = await self.current(
                name, allowed, to.name.lower().replace("copying", "resume"),
                f"it must be {' or '.join(sorted(_STATES[s] for s in allowed))}")
            changed = replace(migration, state=to, error="", updated_at_ms=self.now())
            await self.write(replace(record, migration=changed))
            return changed

    async def _progress(self, read: CollectionRecord, started: Migration,
                        cursor: str | None = None, copied: int = 0,
                        skipped: list[str] | None = None) -> None:
        """Saves the copy's progress and renews this worker's claim, unless a control has
        changed the state (or started another migration) meanwhile."""
        async with self.lock(read.name):
            record, migration = await self.current(read.name, {MigrationState.COPYING}, "", "",
                                                    same=(read, started))
            now = self.now()
            migration = replace(
                migration, cursor=migration.cursor if cursor is None else cursor,
                copied=migration.copied + copied, updated_at_ms=now, worker=self.worker, error="",
                lease_until_ms=now + self.lease_ms)
            await self.write(replace(record, migration=_with_skipped(migration, skipped or [])))

    async def _switch(self, record: CollectionRecord, migration: Migration) -> Migration:
        now = self.now()
        switched = replace(migration, state=MigrationState.SWITCHED, switched_at_ms=now,
                           updated_at_ms=now)
        await self.write(replace(record, model=migration.target, migration=switched))
        log.info("collection %s switched to model %s", record.name,
                 migration.target.model_name)
        return switched

    async def _finish(self, record: CollectionRecord, migration: Migration) -> Migration:
        ended = replace(migration, state=MigrationState.FINISHED, updated_at_ms=self.now())
        await self.write(replace(record, migration=ended))
        await self._drop(replace(record, model=migration.source))
        return ended

    async def write(self, record: CollectionRecord) -> None:
        await self.core.store.update_collection(record)
        self.core.forget(record.name)

    async def _drop(self, space: CollectionRecord) -> None:
        """A model's rows under the collection's key: its vectors, class names, feedback and
        query adaptation (a map of that model's space, never carried: the new model's is fit
        again from the carried feedback)."""
        space = replace(space, migration=None)
        for rows in (space, class_names.of(space), feedback_space.of(space),
                     adaptation_space.of(space)):
            await self.core.store.delete_space(rows)


def _with_skipped(migration: Migration, skipped: list[str], replace_all: bool = False
                  ) -> Migration:
    if replace_all:
        return replace(migration, skipped=len(skipped),
                       skipped_ids=tuple(skipped[:MAX_SKIPPED_IDS]))
    if not skipped:
        return migration
    ids = (migration.skipped_ids + tuple(skipped))[:MAX_SKIPPED_IDS]
    return replace(migration, skipped=migration.skipped + len(skipped), skipped_ids=ids)


class MigrationWorker:
    """Runs every collection's migration on, in the background: woken by a start or a
    resume, and every `poll_s` (for restarts, other replicas' abandoned claims and grace
    periods that end)."""

    def __init__(self, migrations: Migrations, poll_s: float = 5.0) -> None:
        self.migrations = migrations
        self.poll_s = poll_s

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a fault of Milvus or the embedder: try again next poll
                log.exception("migration step failed; retrying in %.0f s", self.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.migrations.wake.wait(), self.poll_s)
            self.migrations.wake.clear()

    async def run_once(self) -> None:
        """Every collection with a migration to move on, a step of each in turn (one large
        copy does not hold up the others, nor the end of their grace periods), until none has
        more to do now."""
        active = await self._migrating()
        while active:
            going = []
            for name in active:
                try:
                    if await self.migrations.step(name):
                        going.append(name)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    await self._failed(name, err)
            active = going

    async def _migrating(self) -> list[str]:
        names, after = [], ""
        while True:
            records = await self.migrations.core.store.list_collections(check.MAX_PAGE, after)
            names += [r.name for r in records if r.migration is not None
                      and r.migration.state in (MigrationState.COPYING,
                                                MigrationState.SWITCHED)]
            if len(records) < check.MAX_PAGE:
                return names
            after = records[-1].name

    async def _failed(self, name: str, err: Exception) -> None:
        """A copy that meets an unavailable embedder or Milvus carries on at the next poll,
        with the reason shown; any other fault stops it in FAILED (ResumeMigration retries)."""
        log.warning("migration of %s: %s", name, err)
        migrations = self.migrations
        try:
            async with migrations.lock(name):
                record, migration = await migrations.current(
                    name, {MigrationState.COPYING}, "", "")
                migration = replace(
                    migration, error=f"{type(err).__name__}: {err}"[:500],
                    state=(MigrationState.COPYING if isinstance(err, Unavailable)
                           else MigrationState.FAILED), updated_at_ms=migrations.now())
                await migrations.write(replace(record, migration=migration))
        except Exception:
            log.exception("could not record the failure of %s's migration", name)
