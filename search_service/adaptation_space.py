"""Where a collection's query adaptation is kept: a space of its own under the collection's
key, as its feedback and class names are (search_service.feedback_space): made on first use,
deleted with the collection, kept across restarts, shared by every replica.

The map (I + W, dimension x dimension) is one row per matrix row, beside a header row that
carries what the collection reports (version, enabled, the fit's figures). Each row is kept
as a unit vector with its length beside it, so a store that normalises vectors for cosine
search keeps the map exact. Each fit writes its rows under ids of its own, then switches the
header to them (one row: every reader sees the old map or the new one) and deletes the
previous fit's rows; a reader that finds the header's rows incomplete (deleted under it) uses
none. A fit that never switched the header leaves nothing another fit reads.

A reset leaves a row of its own (a new random token each time) in the space of every model
the collection has (both during a migration) before deleting the maps: a fit running on any
replica compares the token it began under before and after it keeps its map, so a reset made
through any replica stops every fit begun before it (search_service.adaptation).

Reads that decide a write (the reset token, the header before it is replaced, switched or
deleted) are strong: they see what other replicas wrote, which the store's own consistency
(Session on Milvus) does not promise. Reads that only answer (GetAdaptation, the searches'
cached map) stay at the store's consistency.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import replace
from typing import Any

import numpy as np

from search_service import adaptation_fit
from search_service.domain import DUAL_WRITES, Adaptation, CollectionRecord, ModelSpace
from search_service.ports import VectorStore

HEADER = "header"
RESET = "reset"  # its token changes at every reset
VERSION_KEY, ENABLED_KEY, NORM_KEY, FIT_KEY, TOKEN_KEY = (
    "version", "enabled", "norm", "fit", "token")
_FIGURES = ("queries", "judgements", "fitted_ms", "held_out", "held_out_before",
            "held_out_after")
# How long an instance reuses a collection's map before reading it again: a refit, switch
# or reset made through another replica reaches searches here within this time.
CACHE_TTL_S = 5.0


def of(record: CollectionRecord) -> CollectionRecord:
    """The record under which the collection's adaptation is kept (a space per model)."""
    seed = "\n".join([record.model.fingerprint, "adaptation"])
    space = ModelSpace("sha256:" + hashlib.sha256(seed.encode()).hexdigest(),
                       record.model.dimension, f"adaptation of {record.model.model_name}")
    return replace(record, model=space)


def slot(record: CollectionRecord) -> str:
    """What a collection's map is known by in this process: its key and its model, so a map
    (or a fit) of the model a migration switched away from is never taken for the new one's."""
    return f"{record.key}\n{record.model.fingerprint}"


def _row(index: int, fit: str = "") -> str:
    """A map row's id: under its fit's id (maps kept before fits had ids of their own: none)."""
    return f"{fit}:m{index:05d}" if fit else f"m{index:05d}"


def _rows(record: CollectionRecord, fit: str = "") -> list[str]:
    return [_row(i, fit) for i in range(record.model.dimension)]


async def header(store: VectorStore, record: CollectionRecord) -> Adaptation:
    """The kept map's figures and switch, without reading the map."""
    info, _ = await _read_header(store, record)
    return info


async def _read_header(store: VectorStore, record: CollectionRecord, strong: bool = False
                       ) -> tuple[Adaptation, dict[str, Any] | None]:
    found = await store.get(of(record), [HEADER], strong=strong)
    if not found:
        return Adaptation(), None
    meta = found[0].metadata
    info = Adaptation(version=int(meta[VERSION_KEY]), enabled=bool(meta[ENABLED_KEY]),
                      **{k: type(getattr(Adaptation(), k))(meta[k]) for k in _FIGURES})
    return info, meta


async def load(store: VectorStore, record: CollectionRecord
               ) -> tuple[Adaptation, np.ndarray | None]:
    """What is kept: the header's figures and the map (None when none is kept, or when its
    rows are incomplete)."""
    info, meta = await _read_header(store, record)
    if meta is None:
        return info, None
    fit = str(meta[FIT_KEY])
    ids = _rows(record, fit)
    rows = {r.external_id: r for r in await store.get(of(record), ids, True)}
    if not rows:  # kept before fits had row ids of their own
        ids = _rows(record)
        rows = {r.external_id: r for r in await store.get(of(record), ids, True)}
    if len(rows) != len(ids) or any(
            r.metadata[FIT_KEY] != fit or r.vector is None for r in rows.values()):
        return info, None
    matrix = np.stack([np.asarray(rows[i].vector, dtype=np.float64)
                       * float(rows[i].metadata[NORM_KEY]) for i in ids])
    return info, matrix.astype(np.float32)


async def save(store: VectorStore, record: CollectionRecord, fitted: adaptation_fit.Fitted,
               judgements: int, enabled: bool) -> str:
    """Keeps a newly fitted map as the next version; returns its fit's id."""
    fit = await write_rows(store, record, fitted)
    await publish(store, record, fit, fitted, judgements, enabled)
    return fit


async def write_rows(store: VectorStore, record: CollectionRecord,
                     fitted: adaptation_fit.Fitted) -> str:
    """Writes a map's rows under a new fit id (read by no one until `publish`); the id."""
    norms = np.linalg.norm(fitted.matrix, axis=1)
    units = fitted.matrix / np.where(norms > 0, norms, 1.0)[:, None]
    fit = secrets.token_hex(8)
    meta: list[dict[str, object]] = [{FIT_KEY: fit, NORM_KEY: float(n)} for n in norms]
    await store.upsert(of(record), _rows(record, fit), units.astype(np.float32), meta)
    return fit


async def publish(store: VectorStore, record: CollectionRecord, fit: str,
                  fitted: adaptation_fit.Fitted, judgements: int, enabled: bool) -> Adaptation:
    """Switches the header to the rows of `fit` as the next version, then deletes the rows
    of the map it replaces."""
    old, meta = await _read_header(store, record, strong=True)
    info = Adaptation(version=old.version + 1, enabled=enabled, queries=fitted.queries,
                      judgements=judgements, fitted_ms=int(time.time() * 1000),
                      held_out=fitted.held_out, held_out_before=fitted.held_out_before,
                      held_out_after=fitted.held_out_after)
    await store.upsert(of(record), [HEADER], _header_vector(record)[None, :],
                       [{**_header(info), FIT_KEY: fit}])
    if meta is not None and meta[FIT_KEY] != fit:
        await drop_rows(store, record, str(meta[FIT_KEY]))
    return info


async def drop_rows(store: VectorStore, record: CollectionRecord, fit: str) -> None:
    """Deletes the rows written under `fit` (and rows kept before fits had ids of their own)."""
    await store.delete(of(record), _rows(record, fit) + _rows(record))


async def set_enabled(store: VectorStore, record: CollectionRecord, enabled: bool
                      ) -> Adaptation | None:
    """Switches the kept map on or off; None when no map is kept."""
    found = await store.get(of(record), [HEADER], strong=True)
    if not found:
        return None
    meta = {**found[0].metadata, ENABLED_KEY: enabled}
    await store.upsert(of(record), [HEADER], _header_vector(record)[None, :], [meta])
    info, _ = await load(store, record)
    return info


async def reset_token(store: VectorStore, record: CollectionRecord) -> str:
    """The token of the last reset of the record's model's space ("" when there was none),
    read strongly: a reset made through another replica just before is seen, so a fit begun
    after it is not taken for one it interrupted."""
    found = await store.get(of(record), [RESET], strong=True)
    return str(found[0].metadata[TOKEN_KEY]) if found else ""


async def reset(store: VectorStore, record: CollectionRecord) -> None:
    """A new reset token, then the map deleted, in the space of each model the collection has
    (a migration's source and target both: a rollback must not bring a map back, nor a fit
    begun on the source keep one): a fit that began before the token changed keeps nothing,
    whichever replica runs it (search_service.adaptation)."""
    for space in _models(record):
        await store.upsert(of(space), [RESET], _header_vector(space)[None, :],
                           [{TOKEN_KEY: secrets.token_hex(8)}])
        found = await store.get(of(space), [HEADER], strong=True)
        if found:
            await store.delete(of(space), [HEADER])
            await drop_rows(store, space, str(found[0].metadata[FIT_KEY]))


def _models(record: CollectionRecord) -> list[CollectionRecord]:
    """The record as each model it has rows of: both while a migration writes to both, the
    current one otherwise (an ended migration's other model was dropped: not made again)."""
    if record.migration is None or record.migration.state not in DUAL_WRITES:
        return [record]
    return [replace(record, model=model, migration=None)
            for model in (record.migration.source, record.migration.target)]


async def withdraw(store: VectorStore, record: CollectionRecord, fit: str) -> None:
    """Deletes the map kept by the fit `fit` - the header only if it still names that fit."""
    found = await store.get(of(record), [HEADER], strong=True)
    if found and found[0].metadata.get(FIT_KEY) == fit:
        await store.delete(of(record), [HEADER])
    await store.delete(of(record), _rows(record, fit))


def _header(info: Adaptation) -> dict[str, object]:
    return {VERSION_KEY: info.version, ENABLED_KEY: info.enabled,
            **{k: getattr(info, k) for k in _FIGURES}}


def _header_vector(record: CollectionRecord) -> np.ndarray:
    vector = np.zeros(record.model.dimension, dtype=np.float32)
    vector[0] = 1.0
    return vector


class Cache:
    """Each collection's enabled map, reused for CACHE_TTL_S (searches read it per query
    batch; a store read each time would add a round trip to every search)."""

    def __init__(self, ttl_s: float = CACHE_TTL_S) -> None:
        self._ttl = ttl_s
        self._maps: dict[str, tuple[float, np.ndarray | None]] = {}

    async def active(self, store: VectorStore, record: CollectionRecord) -> np.ndarray | None:
        now = time.monotonic()
        cached = self._maps.get(slot(record))
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        info, matrix = await load(store, record)
        active = matrix if info.enabled else None
        self._maps[slot(record)] = (now, active)
        return active

    def forget(self, record: CollectionRecord) -> None:
        """This instance's own changes apply at once."""
        self._maps.pop(slot(record), None)
