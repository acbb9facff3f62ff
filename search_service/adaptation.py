"""Learned use of stored feedback: a per-collection adaptation of text queries, fit from the
collection's recorded judgements (search_service.feedback) and applied by the core to every
text query of Search, Classify and compound queries while it is enabled.

Fitting runs off the request path: FitAdaptation reads the judgements, refuses at once when
there are too few to help, then fits (search_service.adaptation_fit, numpy on a worker thread)
in a background task and keeps the map (search_service.adaptation_space) as a new version.
Which fits are running is known to the instance that runs them; what was fit is kept in the
store and read by every replica. A reset through any replica stops every fit begun before it:
the fit compares the store's reset token with the one it began under, before and after it
keeps its map (search_service.adaptation_space).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

import numpy as np

from imagesearch.errors import FailedPrecondition
from search_service import adaptation_fit as fitting
from search_service import adaptation_space as kept
from search_service import feedback_space
from search_service import validation as check
from search_service.core import SearchCore
from search_service.domain import Adaptation, CollectionRecord, FitState
from search_service.errors import CollectionNotFound

log = logging.getLogger(__name__)

# Below these the map measured no better than none (bench/adaptation_eval.py: one round of
# 48 judged queries, ~480 judgements, moved R@1 by 0-2 points): judged text queries with at
# least one image judged relevant, and judgements of text queries in all.
MIN_QUERIES = 40
MIN_JUDGEMENTS = 200


@dataclass
class _Fit:
    state: FitState
    task: asyncio.Task[None] | None = None
    error: str = ""
    reset_token: str = ""  # the last reset's when the fit began (adaptation_space)


class Fits:
    """The fits this instance runs or ran, by collection key and model: a fit belongs to the
    model it began under, as the map it makes does."""

    def __init__(self) -> None:
        self._fits: dict[str, _Fit] = {}

    def of(self, record: CollectionRecord) -> _Fit:
        return self._fits.get(kept.slot(record), _Fit(FitState.NONE))

    def running(self, record: CollectionRecord) -> bool:
        return self.of(record).state is FitState.FITTING

    def start(self, record: CollectionRecord, fit: _Fit) -> None:
        self._fits[kept.slot(record)] = fit

    def end(self, record: CollectionRecord, fit: _Fit, error: str = "") -> None:
        """Records how `fit` ended, unless another fit has taken its place since."""
        if self._fits.get(kept.slot(record)) is fit:
            self._fits[kept.slot(record)] = _Fit(
                FitState.FAILED if error else FitState.DONE, None, error)

    def cancel(self, record: CollectionRecord) -> None:
        fit = self._fits.pop(kept.slot(record), None)
        if fit is not None and fit.task is not None:
            fit.task.cancel()

    async def close(self) -> None:
        tasks = [f.task for f in self._fits.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def start_fit(core: SearchCore, fits: Fits, collection: str, enable: bool
                    ) -> Adaptation:
    """Starts a fit and returns at once (state FITTING); the running fit's state when one
    runs already. FailedPrecondition, saying what is needed, when the feedback is too thin."""
    record = await core.store.get_collection(check.check_collection_name(collection))
    token = await kept.reset_token(core.store, record)
    if fits.running(record):
        if fits.of(record).reset_token == token:
            return await get(core, fits, collection)
        # Begun before a reset through another replica, it would keep nothing: a new one.
        fits.cancel(record)
    judged, judgements = await _judged(core, record)
    if len(judged) < MIN_QUERIES or judgements < MIN_JUDGEMENTS:
        raise FailedPrecondition(
            f"collection {record.name!r} has {len(judged)} judged text queries with a relevant "
            f"image and {judgements} judgements of text queries; an adaptation needs at least "
            f"{MIN_QUERIES} and {MIN_JUDGEMENTS}: record more feedback (RecordFeedback) "
            "on text queries first")
    fit = _Fit(FitState.FITTING, reset_token=token)
    fit.task = asyncio.create_task(_fit(core, fits, fit, record, judged, judgements, enable))
    fits.start(record, fit)
    return await get(core, fits, collection)


async def _fit(core: SearchCore, fits: Fits, fit: _Fit, record: CollectionRecord,
               judged: list[fitting.Judged], judgements: int, enable: bool) -> None:
    try:
        images = await _image_vectors(core, record, judged)
        fitted = await asyncio.to_thread(fitting.fit, judged, images)
        await _still_current(core, record, fit.reset_token)
        # Switched on only where it measured clearly better on the queries held out of the
        # fit: a map that does not help (the model already reads this collection well) stays
        # off.
        helps = fitting.worth_enabling(fitted)
        # Shielded: a store write on its way lands even if this task is cancelled (a local
        # reset), so what follows it must run too - the check that withdraws it.
        error = await asyncio.shield(
            _keep(core, record, fit.reset_token, fitted, judgements, enable and helps))
    except asyncio.CancelledError:
        raise
    except _Stale as changed:
        error = str(changed)
    except CollectionNotFound:  # deleted while its images were read: nothing to log
        error = _deleted(record)
    except Exception:  # the fit's state says it failed; the traceback goes to the log
        log.exception("adaptation fit failed", extra={"collection": record.name})
        error = FIT_FAILED
    core.adaptations.forget(record)
    fits.end(record, fit, error)


async def _keep(core: SearchCore, record: CollectionRecord, token: str,
                fitted: fitting.Fitted, judgements: int, enabled: bool) -> str:
    """Keeps the map unless the adaptation was reset since the fit began: "" when kept, else
    why not. The rows go under the fit's own ids, then the token is checked, then the header
    is switched to them; a reset landing between that check and the switch (its delete may
    have run first) is caught by checking again, and the map withdrawn. (The store has no
    compare-and-set: if this header write is delayed past a reset and past the whole run of a
    fit begun after it, it replaces that fit's map, and the withdrawal leaves none.)"""
    store = core.store
    try:
        rows = await kept.write_rows(store, record, fitted)
        if await kept.reset_token(store, record) != token:
            await kept.drop_rows(store, record, rows)
            return RESET_DURING_FIT
        await kept.publish(store, record, rows, fitted, judgements, enabled)
        if await kept.reset_token(store, record) != token:
            await kept.withdraw(store, record, rows)
            return RESET_DURING_FIT
        return ""
    except CollectionNotFound:
        return _deleted(record)
    except Exception:  # may outlive a cancelled fit: nothing else would log it
        log.exception("adaptation fit failed", extra={"collection": record.name})
        return FIT_FAILED


RESET_DURING_FIT = ("the adaptation was reset (ResetAdaptation) while this fit ran, so it kept "
                    "nothing: fit again (FitAdaptation) if a map is wanted")
FIT_FAILED = ("the fit failed on the server (see its log); the map kept before it, if any, is "
              "unchanged: try FitAdaptation again")


def _deleted(record: CollectionRecord) -> str:
    return f"collection {record.name!r} was deleted while the fit ran"


class _Stale(Exception):
    """The collection the fit began on is gone, has another model, or was reset: its map is
    not kept."""


async def _still_current(core: SearchCore, began: CollectionRecord, token: str) -> None:
    """A map fit on one model's vectors is not kept once the collection has been deleted or
    has moved to another model (a migration's switch or rollback during the fit): it would
    never be applied, and the delete or the migration that drops the old model's rows may
    already have run. (A write racing this check is left to the store's sweep, as late
    writes of deleted collections are.) Nor once the adaptation was reset through any
    replica."""
    try:
        now = await core.store.get_collection(began.name)
    except CollectionNotFound:
        now = None
    if now is None or now.key != began.key:
        raise _Stale(_deleted(began))
    if now.model.fingerprint != began.model.fingerprint:
        raise _Stale(
            f"collection {began.name!r} moved to another model while the fit ran; a map "
            "belongs to one model: fit again (FitAdaptation) on the feedback carried over")
    if await kept.reset_token(core.store, began) != token:
        raise _Stale(RESET_DURING_FIT)


async def _judged(core: SearchCore, record: CollectionRecord
                  ) -> tuple[list[fitting.Judged], int]:
    """The collection's judged text queries (grouped by query vector), and how many
    judgements they hold."""
    by_query: dict[str, tuple[np.ndarray, list[str], list[str]]] = {}
    after, total = "", 0
    while True:
        page = await core.store.list_images(feedback_space.of(record), check.MAX_PAGE, after,
                                            True, True)
        for row in page:
            if row.metadata.get(feedback_space.KIND_KEY) != "text" or row.vector is None:
                continue
            total += 1
            digest = row.external_id.rpartition("/")[2]
            _, relevant, not_relevant = by_query.setdefault(digest, (row.vector, [], []))
            image_id = str(row.metadata[feedback_space.IMAGE_KEY])
            (relevant if row.metadata.get(feedback_space.RELEVANT_KEY) else not_relevant
             ).append(image_id)
        if len(page) < check.MAX_PAGE:
            break
        after = page[-1].external_id
    judged = [fitting.Judged(v, tuple(r), tuple(n)) for v, r, n in by_query.values()]
    return fitting.usable(judged), total


async def _image_vectors(core: SearchCore, record: CollectionRecord,
                         judged: list[fitting.Judged]) -> dict[str, np.ndarray]:
    ids = sorted({i for j in judged for i in (*j.relevant, *j.not_relevant)})
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(ids), check.MAX_IDS):
        for image in await core.store.get(record, ids[start:start + check.MAX_IDS], True):
            if image.vector is not None:
                found[image.external_id] = image.vector
    return found


async def get(core: SearchCore, fits: Fits, collection: str) -> Adaptation:
    record = await core.store.get_collection(check.check_collection_name(collection))
    return await describe(core, fits, record)


async def describe(core: SearchCore, fits: Fits, record: CollectionRecord) -> Adaptation:
    """The kept map's figures and switch (not the map), and the fit's state here."""
    info = await kept.header(core.store, record)
    fit = fits.of(record)
    return replace(info, state=fit.state, fit_error=fit.error)


async def set_enabled(core: SearchCore, fits: Fits, collection: str, enabled: bool
                      ) -> Adaptation:
    record = await core.store.get_collection(check.check_collection_name(collection))
    info = await kept.set_enabled(core.store, record, enabled)
    if info is None:
        raise FailedPrecondition(f"collection {record.name!r} has no fitted adaptation to "
                                 "switch: fit one first (FitAdaptation)")
    core.adaptations.forget(record)
    fit = fits.of(record)
    return replace(info, state=fit.state, fit_error=fit.error)


async def reset(core: SearchCore, fits: Fits, collection: str) -> None:
    """Stops a running fit - here at once, on other replicas before it keeps anything - and
    deletes the kept map: text queries are searched as embedded again."""
    record = await core.store.get_collection(check.check_collection_name(collection))
    fits.cancel(record)
    await kept.reset(core.store, record)
    core.adaptations.forget(record)
