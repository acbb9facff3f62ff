"""Near-duplicates and k-nearest-neighbour classification, on top of the search core."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from imagesearch.errors import InvalidArgument, NotFound
from search_service.core import (
    MAX_QUERIES,
    NOT_FOUND,
    ItemStatus,
    Query,
    SearchCore,
    check_similarity,
)
from search_service.filters import Condition, Op
from search_service.names import check_metadata_key
from search_service.store import Hit

DEFAULT_DUPLICATE_SIMILARITY = 0.95
SCAN_PAGE = 256


@dataclass(frozen=True)
class DuplicateGroup:
    ids: list[str]
    min_similarity: float


@dataclass(frozen=True)
class LabelScore:
    label: str
    confidence: float
    votes: int


@dataclass(frozen=True)
class Classification:
    labels: list[LabelScore]
    status: ItemStatus = field(default_factory=ItemStatus)


def _threshold(value: float) -> float:
    return check_similarity(value) or DEFAULT_DUPLICATE_SIMILARITY


def _bounded(name: str, value: int, low: int, high: int, default: int) -> int:
    if value and not low <= value <= high:
        raise InvalidArgument(f"{name} must be {low} to {high}; got {value}")
    return value or default


def _without(hits: list[Hit], external_id: str | None, limit: int) -> list[Hit]:
    return [h for h in hits if h.external_id != external_id][:limit]


async def find_duplicates(core: SearchCore, name: str, query: Query, min_similarity: float,
                          max_results: int, remaining: float | None = None) -> list[Hit]:
    record = await core.collection(name)
    threshold = _threshold(min_similarity)
    limit = _bounded("max_results", max_results, 1, 1000, 10)
    if query.image is None and query.image_id is None:
        raise InvalidArgument("query must be an image or the id of an indexed image")
    (vector,) = await core.query_vectors(record, [query], remaining)
    if isinstance(vector, ItemStatus):
        raise (NotFound if vector.code == NOT_FOUND else InvalidArgument)(vector.message)
    (hits,) = await core.run(core.store.search, record, vector[None, :], limit + 1, (),
                             threshold)
    return _without(hits, query.image_id, limit)


class _Groups:
    """Union-find over near-duplicate pairs, remembering each group's weakest link."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._weakest: dict[str, float] = {}

    def _root(self, item: str) -> str:
        self._parent.setdefault(item, item)
        while self._parent[item] != item:
            self._parent[item] = self._parent[self._parent[item]]
            item = self._parent[item]
        return item

    def join(self, a: str, b: str, similarity: float) -> None:
        root_a, root_b = self._root(a), self._root(b)
        weakest = min(similarity, self._weakest.get(root_a, 1.0), self._weakest.get(root_b, 1.0))
        if root_a != root_b:
            self._parent[root_b] = root_a
        self._weakest[root_a] = weakest

    def groups(self) -> list[DuplicateGroup]:
        members: dict[str, list[str]] = defaultdict(list)
        for item in self._parent:
            members[self._root(item)].append(item)
        found = [DuplicateGroup(sorted(ids), self._weakest[root])
                 for root, ids in members.items() if len(ids) > 1]
        return sorted(found, key=lambda g: (-len(g.ids), g.ids[0]))


async def duplicate_groups(core: SearchCore, name: str, min_similarity: float,
                           neighbours: int) -> tuple[list[DuplicateGroup], int]:
    """Scans the collection a page at a time; each page's neighbours come in one ANN search."""
    record = await core.collection(name)
    threshold = _threshold(min_similarity)
    k = _bounded("neighbours", neighbours, 2, 100, 10)
    groups, scanned, after = _Groups(), 0, ""
    while page := await core.run(core.store.list_images, record, SCAN_PAGE, after, True):
        vectors = np.stack([image.vector for image in page if image.vector is not None])
        hits = await core.run(core.store.search, record, vectors, k + 1, (), threshold)
        for image, found in zip(page, hits, strict=True):
            for hit in _without(found, image.external_id, k):
                groups.join(image.external_id, hit.external_id, hit.similarity)
        scanned += len(page)
        after = page[-1].external_id
    return groups.groups(), scanned


def _vote(hits: list[Hit], label_key: str, max_labels: int) -> list[LabelScore]:
    weights: dict[str, float] = defaultdict(float)
    votes: dict[str, int] = defaultdict(int)
    for hit in hits:
        label = str(hit.metadata[label_key])
        # Similarity-weighted; dissimilar (negative) neighbours get a token weight only.
        weights[label] += max(hit.similarity, 1e-6)
        votes[label] += 1
    total = sum(weights.values())
    ranked = sorted(weights, key=lambda label: (-weights[label], label))
    return [LabelScore(label, weights[label] / total, votes[label])
            for label in ranked[: max_labels or None]]


async def classify(core: SearchCore, name: str, queries: Sequence[Query], label_key: str,
                   k: int, max_labels: int,
                   remaining: float | None = None) -> list[Classification]:
    record = await core.collection(name)
    check_metadata_key(label_key)
    neighbours = _bounded("k", k, 1, 1000, 10)
    if not 0 <= max_labels <= 1000:
        raise InvalidArgument(f"max_labels must be 0 (all) to 1000; got {max_labels}")
    if not queries or len(queries) > MAX_QUERIES:
        raise InvalidArgument(f"send 1 to {MAX_QUERIES} queries; got {len(queries)}")
    vectors = await core.query_vectors(record, queries, remaining)
    ready = [i for i, v in enumerate(vectors) if isinstance(v, np.ndarray)]
    results = [Classification([], v) if isinstance(v, ItemStatus) else Classification([])
               for v in vectors]
    if ready:
        labelled = (Condition(label_key, Op.EXISTS),)
        batch = np.stack([vectors[i] for i in ready])  # type: ignore[misc]
        found = await core.run(core.store.search, record, batch, neighbours + 1, labelled)
        for index, hits in zip(ready, found, strict=True):
            # An indexed image never votes for itself (leave-one-out).
            voters = _without(hits, queries[index].image_id, neighbours)
            results[index] = Classification(_vote(voters, label_key, max_labels))
    return results
