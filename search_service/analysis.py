"""k-nearest-neighbour classification, on the search core's queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from imagesearch.errors import InvalidArgument
from search_service import validation as check
from search_service.core import SearchCore, without
from search_service.domain import (
    Classification,
    Condition,
    Hit,
    LabelScore,
    Op,
    Outcome,
    Query,
    refused,
)

_NO_FEEDBACK = ("feedback refines Search queries only; to classify by examples, make them "
                "image_id parts of a compound query")


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
    vectors = [refused(_NO_FEEDBACK) if query.feedback is not None else vector
               for query, vector in zip(queries, await core.query_vectors(
                   record, queries, remaining), strict=True)]
    labelled = (Condition(label_key, Op.EXISTS),)
    own = max(len(query.own_ids) for query in queries)
    found = await core.nearest(record, vectors, neighbours + own, labelled)
    results = []
    for query, vector, hits in zip(queries, vectors, found, strict=True):
        if isinstance(vector, Outcome):
            results.append(Classification([], vector))
            continue
        # An indexed image never votes for itself (leave-one-out), nor do the indexed
        # images a compound query is made of.
        voters = without(hits, query.own_ids, neighbours)
        results.append(Classification(_vote(voters, label_key, max_labels)))
    return results
