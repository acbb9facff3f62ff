"""Near-duplicates and k-nearest-neighbour classification, on the search core's queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from imagesearch.errors import InvalidArgument, NotFound
from search_service import validation as check
from search_service.core import SearchCore
from search_service.domain import (
    Classification,
    Condition,
    DuplicateGroup,
    Hit,
    LabelScore,
    Op,
    Outcome,
    Problem,
    Query,
)

DEFAULT_DUPLICATE_SIMILARITY = 0.95
SCAN_PAGE = 256


def _threshold(value: float) -> float:
    return check.check_similarity(value) or DEFAULT_DUPLICATE_SIMILARITY


def _without(hits: list[Hit], external_id: str | None, limit: int) -> list[Hit]:
    return [h for h in hits if h.external_id != external_id][:limit]


async def find_duplicates(core: SearchCore, name: str, query: Query, min_similarity: float,
                          max_results: int, remaining: float | None = None) -> list[Hit]:
    threshold = _threshold(min_similarity)
    limit = check.check_bounded("max_results", max_results, 1, 1000, 10)
    if query.image is None and query.image_id is None:
        raise InvalidArgument("query must be an image or the id of an indexed image")
    record = await core.collection(name)
    (vector,) = await core.query_vectors(record, [query], remaining)
    if isinstance(vector, Outcome):
        raise (NotFound if vector.problem is Problem.NOT_FOUND else InvalidArgument)(
            vector.message)
    (hits,) = await core.nearest(record, [vector], limit + 1, (), threshold)
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
    threshold = _threshold(min_similarity)
    k = check.check_bounded("neighbours", neighbours, 2, 100, 10)
    record = await core.collection(name)
    groups, scanned, after = _Groups(), 0, ""
    while page := await core.scan(record, SCAN_PAGE, after):
        vectors = [image.vector for image in page if image.vector is not None]
        hits = await core.nearest(record, vectors, k + 1, (), threshold)
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
    check.check_count("queries", len(queries), check.MAX_QUERIES)
    check.check_metadata_key(label_key)
    neighbours = check.check_bounded("k", k, 1, 1000, 10)
    if not 0 <= max_labels <= 1000:
        raise InvalidArgument(f"max_labels must be 0 (all) to 1000; got {max_labels}")
    record = await core.collection(name)
    vectors = await core.query_vectors(record, queries, remaining)
    labelled = (Condition(label_key, Op.EXISTS),)
    found = await core.nearest(record, vectors, neighbours + 1, labelled)
    results = []
    for query, vector, hits in zip(queries, vectors, found, strict=True):
        if isinstance(vector, Outcome):
            results.append(Classification([], vector))
            continue
        # An indexed image never votes for itself (leave-one-out).
        voters = _without(hits, query.image_id, neighbours)
        results.append(Classification(_vote(voters, label_key, max_labels)))
    return results
