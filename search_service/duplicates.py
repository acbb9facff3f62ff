"""Duplicates: verified copies of the same picture (on the images' copy signals, whatever the
model), or images alike by embedding over a threshold; for one query, or grouped over a whole
collection."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from imagesearch.copies import index, verify
from imagesearch.copies import signal as signals
from imagesearch.copies.signal import CopySignal
from imagesearch.errors import FailedPrecondition, InvalidArgument, NotFound
from search_service import compose, copy_index
from search_service import validation as check
from search_service.core import CopyRecord, SearchCore, without
from search_service.domain import (
    CollectionRecord,
    CopyEvidence,
    DuplicateGroup,
    DuplicateGroups,
    DuplicateMode,
    Duplicates,
    Embedding,
    Hit,
    MatchKind,
    Outcome,
    Problem,
    Query,
    StoredImage,
)

DEFAULT_DUPLICATE_SIMILARITY = 0.95
SCAN_PAGE = 256
# COPIES: the query's nearest images verified, at least this many (edited copies - crops,
# frames, overlays - can rank below merely similar images), at most the second figure.
COPY_CANDIDATES = 50
MAX_COPY_CANDIDATES = 1000
VERIFY_THREADS = min(8, os.cpu_count() or 1)
# Groups (COPIES): each image's nearest by index hash are candidates beside its embedding
# neighbours - framed, watermarked and turned copies that a weak embedding ranks low - within
# this Hamming distance (such copies: median 2-10 bits of 64; bench/RESULTS.md).
GROUP_INDEX_CANDIDATES = 4
GROUP_INDEX_MAX_BITS = 16


def _threshold(value: float) -> float:
    return check.check_similarity(value) or DEFAULT_DUPLICATE_SIMILARITY


async def find_duplicates(core: SearchCore, name: str, query: Query, min_similarity: float,
                          max_results: int, remaining: float | None = None,
                          mode: DuplicateMode | None = None) -> Duplicates:
    """COPIES: the query's nearest images, verified on their copy signals. Left to the
    service (mode None), a query without a copy signal (an image added before the service
    kept them, or an embedder older than them) is answered as SIMILAR, and says so."""
    limit = check.check_bounded("max_results", max_results, 1, 1000, 10)
    if query.feedback is not None:
        raise InvalidArgument("feedback refines Search queries only; FindDuplicates looks for "
                              "one image (or a compound query of images)")
    if query.parts is not None:
        return await _compound(core, name, query, min_similarity, limit, remaining, mode)
    if query.image is None and query.image_id is None:
        raise InvalidArgument("query must be an image, the id of an indexed image, or a "
                              "compound query of those")
    chosen = _mode(core, mode)
    record = await core.collection(name)
    if chosen is DuplicateMode.SIMILAR:
        (vector,) = await core.query_vectors(record, [query], remaining)
        return await _similar(core, record, _vector(vector), query, min_similarity, limit)
    floor = check.check_similarity(min_similarity) or -1.0
    found, copy = await core.query_copy_record(record, query, remaining)
    vector = _vector(found)
    signal = _decoded(copy)
    if signal is None or copy is None:
        if mode is None:
            return await _similar(core, record, vector, query, min_similarity, limit)
        raise FailedPrecondition(_no_signal(query))
    candidates = min(max(COPY_CANDIDATES, 2 * limit), MAX_COPY_CANDIDATES)
    (hits,) = await core.nearest(record, [vector], candidates + 1, (), floor)
    hits = without(hits, query.own_ids, candidates)
    hits += await _indexed(core, record, signal, vector, hits, query.image_id, floor)
    hits.sort(key=lambda h: -h.similarity)
    records = await core.copy_records(record, [h.external_id for h in hits])
    copies, unverified = await asyncio.to_thread(_verified, copy.digest, signal, hits, records)
    return Duplicates(copies[:limit], chosen, unverified)


async def _indexed(core: SearchCore, record: CollectionRecord, signal: CopySignal,
                   vector: np.ndarray, hits: list[Hit], own: str | None, floor: float
                   ) -> list[Hit]:
    """The copy index's candidates that the embedding's missed, as hits on their stored
    vectors (an index row whose image is gone meanwhile is no candidate)."""
    seen = {h.external_id for h in hits} | {own}
    ids = [i for i in await copy_index.nearest(core.store, record, signal) if i not in seen]
    if not ids:
        return []
    stored = await core.store.get(record, ids, with_vectors=True)
    found = [Hit(image.external_id, float(np.dot(vector, image.vector)), image.metadata)
             for image in stored if image.vector is not None]
    return [hit for hit in found if hit.similarity >= floor]


async def _compound(core: SearchCore, name: str, query: Query, min_similarity: float,
                    limit: int, remaining: float | None, mode: DuplicateMode | None
                    ) -> Duplicates:
    """A weighted sum of images, answered by similarity: copies are verified against one
    picture, and a sum of pictures is none."""
    if mode is DuplicateMode.COPIES:
        raise InvalidArgument("DUPLICATE_MODE_COPIES verifies copies of one picture, and a "
                              "compound query is a sum of several: ask for "
                              "DUPLICATE_MODE_SIMILAR, or leave mode unset")
    for n, part in enumerate(query.parts or (), 1):
        if part.query.image is None and part.query.image_id is None:
            raise InvalidArgument(f"FindDuplicates takes image and image_id parts only; part "
                                  f"{n} is a {compose.kind(part.query) or 'empty part'}")
    record = await core.collection(name)
    (vector,) = await core.query_vectors(record, [query], remaining)
    return await _similar(core, record, _vector(vector), query, min_similarity, limit)


async def _similar(core: SearchCore, record: CollectionRecord, vector: np.ndarray,
                   query: Query, min_similarity: float, limit: int) -> Duplicates:
    threshold = _threshold(min_similarity)
    own = query.own_ids
    (hits,) = await core.nearest(record, [vector], limit + len(own), (), threshold)
    return Duplicates([replace(h, match=MatchKind.SIMILAR)
                       for h in without(hits, own, limit)], DuplicateMode.SIMILAR)


def _mode(core: SearchCore, mode: DuplicateMode | None) -> DuplicateMode:
    if mode is None:
        return DuplicateMode.COPIES if core.images is not None else DuplicateMode.SIMILAR
    if mode is DuplicateMode.COPIES and core.images is None:
        raise FailedPrecondition(
            "this service keeps no copy signals (SEARCH_IMAGE_STORE is off), so it cannot "
            "verify copies: ask for DUPLICATE_MODE_SIMILAR with a threshold")
    return mode


def _vector(vector: Embedding) -> np.ndarray:
    if isinstance(vector, Outcome):
        raise (NotFound if vector.problem is Problem.NOT_FOUND else InvalidArgument)(
            vector.message)
    return vector


def _no_signal(query: Query) -> str:
    if query.image_id is not None:
        return (f"image {query.image_id!r} has no copy signal (it was added before this "
                "service kept them): add it again, query with its bytes, or ask for "
                "DUPLICATE_MODE_SIMILAR")
    return ("the embedder made no copy signal for this image (is it older than the search "
            "service?): ask for DUPLICATE_MODE_SIMILAR")


def _verified(digest: bytes, signal: CopySignal, hits: list[Hit],
              records: dict[str, CopyRecord]) -> tuple[list[Hit], int]:
    """The hits that are copies of the query, exact ones first; and how many could not be
    verified for want of a copy signal. Verified on every core (OpenCV releases the GIL)."""
    exact, pending, unverified = [], [], 0
    for hit in hits:
        stored = records.get(hit.external_id)
        if stored is not None and stored.digest == digest:
            exact.append(replace(hit, match=MatchKind.EXACT, evidence=_SAME))
            continue
        candidate = _decoded(stored)
        if candidate is None:
            unverified += 1
        else:
            pending.append((hit, candidate))
    with ThreadPoolExecutor(VERIFY_THREADS) as pool:
        found = list(pool.map(lambda pair: verify.compare(signal, pair[1]), pending))
    copies = [replace(hit, match=MatchKind.COPY, evidence=_evidence(evidence))
              for (hit, _), evidence in zip(pending, found, strict=True) if evidence.is_copy]
    return exact + copies, unverified


_SAME = CopyEvidence(hash_distance=0, mirrored=False, inliers=0, correlation=1.0)


def _decoded(stored: CopyRecord | None) -> CopySignal | None:
    return signals.decoded(stored.signal if stored is not None else None)


def _evidence(found: verify.Evidence) -> CopyEvidence:
    return CopyEvidence(found.hash_distance, found.mirrored, found.inliers,
                        round(found.correlation, 4))


class _Groups:
    """Union-find over near-duplicate pairs, remembering each group's weakest link. The first
    of a group's images stays its root."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._weakest: dict[str, float] = {}

    def root(self, item: str) -> str:
        self._parent.setdefault(item, item)
        while self._parent[item] != item:
            self._parent[item] = self._parent[self._parent[item]]
            item = self._parent[item]
        return item

    def together(self, a: str, b: str) -> bool:
        return a in self._parent and b in self._parent and self.root(a) == self.root(b)

    def join(self, a: str, b: str, similarity: float) -> None:
        root_a, root_b = self.root(a), self.root(b)
        weakest = min(similarity, self._weakest.get(root_a, 1.0), self._weakest.get(root_b, 1.0))
        if root_a != root_b:
            self._parent[root_b] = root_a
        self._weakest[root_a] = weakest

    def groups(self) -> list[DuplicateGroup]:
        members: dict[str, list[str]] = defaultdict(list)
        for item in self._parent:
            members[self.root(item)].append(item)
        found = [DuplicateGroup(sorted(ids), self._weakest[root])
                 for root, ids in members.items() if len(ids) > 1]
        return sorted(found, key=lambda g: (-len(g.ids), g.ids[0]))


async def duplicate_groups(core: SearchCore, name: str, min_similarity: float,
                           neighbours: int, mode: DuplicateMode | None = None
                           ) -> DuplicateGroups:
    """Scans the collection a page at a time; each page's neighbours come in one ANN search.
    COPIES: each neighbour pair not already in one group is verified on its copy signals."""
    k = check.check_bounded("neighbours", neighbours, 2, 100, 10)
    mode = _mode(core, mode)
    copies = mode is DuplicateMode.COPIES
    threshold = (check.check_similarity(min_similarity) or -1.0) if copies else _threshold(
        min_similarity)
    record = await core.collection(name)
    groups, scanned, unverified, after = _Groups(), 0, 0, ""
    cache = _SignalCache()
    while page := await core.scan(record, SCAN_PAGE, after):
        vectors = [image.vector for image in page if image.vector is not None]
        hits = await core.nearest(record, vectors, k + 1, (), threshold)
        pairs = [(image.external_id, hit) for image, found in zip(page, hits, strict=True)
                 for hit in without(found, frozenset({image.external_id}), k)]
        if copies:
            pairs += await _index_pairs(core, record, page, pairs, threshold)
            missing = await cache.load(core, record, {i for p in pairs for i in (p[0],
                                                      p[1].external_id)}
                                       | {image.external_id for image in page})
            unverified += sum(1 for image in page if image.external_id in missing)
            await asyncio.to_thread(_join_copies, groups, cache, pairs)
        else:
            for image_id, hit in pairs:
                groups.join(image_id, hit.external_id, hit.similarity)
        scanned += len(page)
        after = page[-1].external_id
    return DuplicateGroups(groups.groups(), scanned, mode, unverified)


async def _index_pairs(core: SearchCore, record: CollectionRecord, page: list[StoredImage],
                       pairs: list[tuple[str, Hit]], floor: float) -> list[tuple[str, Hit]]:
    """The pairs the copy index proposes for the page's images that their embedding
    neighbours did not; each as a hit with the pair's embedding similarity, at least
    `floor` (the caller's min_similarity holds for every pair, whichever source found it)."""
    space = copy_index.of(record)
    rows = {row.external_id: row.vector
            for row in await core.store.get(space, [i.external_id for i in page], True)
            if row.vector is not None}
    if not rows:
        return []
    within = 1.0 - 2.0 * GROUP_INDEX_MAX_BITS / index.BITS
    nearest = await core.store.search(space, np.stack(list(rows.values())),
                                      GROUP_INDEX_CANDIDATES + 1, (), within)
    seen = {(a, hit.external_id) for a, hit in pairs}
    wanted = [(a, hit.external_id) for a, hits in zip(rows, nearest, strict=True)
              for hit in hits if hit.external_id != a and (a, hit.external_id) not in seen]
    vectors = {image.external_id: image.vector for image in page}
    others = {b for _, b in wanted} - vectors.keys()
    if others:
        vectors |= {i.external_id: i.vector for i in await core.store.get(record, list(others),
                                                                          True)}
    found = [(a, Hit(b, float(np.dot(va, vb)), {})) for a, b in wanted
             if (va := vectors.get(a)) is not None and (vb := vectors.get(b)) is not None]
    return [(a, hit) for a, hit in found if hit.similarity >= floor]


class _SignalCache:
    """Decoded copy records of recent pages and their neighbours (bounded)."""

    LIMIT = 8192

    def __init__(self) -> None:
        self.records: dict[str, tuple[bytes, CopySignal | None]] = {}
        # The groups' representatives (their roots), kept whatever the page.
        self.pinned: dict[str, tuple[bytes, CopySignal | None]] = {}

    def get(self, image_id: str) -> tuple[bytes, CopySignal | None]:
        found = self.records.get(image_id) or self.pinned.get(image_id)
        assert found is not None, image_id
        return found

    def represent(self, root: str, absorbed: str) -> None:
        self.pinned.setdefault(root, self.get(root))
        if absorbed != root:
            self.pinned.pop(absorbed, None)

    async def load(self, core: SearchCore, record: CollectionRecord, ids: set[str]
                   ) -> set[str]:
        """Loads what is not cached; returns the ids without a usable signal."""
        wanted = [i for i in ids if i not in self.records]
        if len(self.records) + len(wanted) > self.LIMIT:
            self.records = {i: self.records[i] for i in ids if i in self.records}
        found = await core.copy_records(record, wanted)
        for image_id in wanted:
            stored = found.get(image_id)
            self.records[image_id] = (stored.digest if stored else b"", _decoded(stored))
        return {i for i in ids if self.records[i][1] is None}


def _join_copies(groups: _Groups, cache: _SignalCache, pairs: list[tuple[str, Hit]]) -> None:
    """Verifies the page's pairs not already in one group, on every core (OpenCV releases
    the GIL), then joins the copies."""
    pending = [(a, hit) for a, hit in pairs if not groups.together(a, hit.external_id)]
    with ThreadPoolExecutor(VERIFY_THREADS) as pool:
        verdicts = list(pool.map(lambda pair: _copies(cache, pair[0], pair[1].external_id),
                                 pending, chunksize=16))
    for (a, hit), copy in zip(pending, verdicts, strict=True):
        b = hit.external_id
        if not copy or groups.together(a, b):
            continue
        # A group is represented by its root: an image joins another's group only if it is a
        # copy of that root too, so that a collage of two pictures (a copy of each) does not
        # make them one group, nor does one false pair merge two whole groups.
        root_a, root_b = groups.root(a), groups.root(b)
        if (root_a != a and not _copies(cache, root_a, b)) or (
                root_b != b and not _copies(cache, root_b, a)):
            continue
        groups.join(a, b, hit.similarity)
        cache.represent(groups.root(a), root_b)


def _copies(cache: _SignalCache, a: str, b: str) -> bool:
    (digest_a, signal_a), (digest_b, signal_b) = cache.get(a), cache.get(b)
    if digest_a and digest_a == digest_b:
        return True
    return (signal_a is not None and signal_b is not None
            and verify.compare(signal_a, signal_b).is_copy)
