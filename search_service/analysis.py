"""Classification, on the search core's queries: a k-nearest-neighbour vote of labelled images,
the nearest of the collection's class names (zero-shot), or the two mixed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from imagesearch.errors import FailedPrecondition, InvalidArgument
from search_service import class_names
from search_service import validation as check
from search_service.core import SearchCore, without
from search_service.domain import (
    Classification,
    ClassSource,
    CollectionRecord,
    Condition,
    Embedding,
    Hit,
    LabelScore,
    Op,
    Outcome,
    Query,
    refused,
)

_NO_FEEDBACK = ("feedback refines Search queries only; to classify by examples, make them "
                "image_id parts of a compound query")
# The names' share of a mixed (BOTH) score. Tip-Adapter adds its cache's logits to CLIP's with
# a weight tuned per data set; here both sides are probabilities, and an even mix is what
# bench/classify_eval.py found best or within a point of it on the bundled model's scenes.
NAMES_WEIGHT = 0.5


def _vote(hits: list[Hit], label_key: str) -> list[LabelScore]:
    weights: dict[str, float] = defaultdict(float)
    votes: dict[str, int] = defaultdict(int)
    for hit in hits:
        label = str(hit.metadata[label_key])
        # Similarity-weighted; dissimilar (negative) neighbours get a token weight only.
        weights[label] += max(hit.similarity, 1e-6)
        votes[label] += 1
    total = sum(weights.values())
    return [LabelScore(label, weights[label] / total, votes[label]) for label in weights]


def mix(voted: list[LabelScore], named: dict[str, float], names_weight: float,
        max_labels: int) -> list[LabelScore]:
    """(1 - w) * the vote's share + w * the names' share, per label (a label and a class name
    are the same class when equal). A side with nothing to say leaves the other whole."""
    weight = names_weight if voted and named else float(bool(named))
    shares = {s.label: s.confidence for s in voted}
    votes = {s.label: s.votes for s in voted}
    scores = {label: (1 - weight) * shares.get(label, 0.0) + weight * named.get(label, 0.0)
              for label in shares.keys() | named.keys()}
    ranked = sorted(scores, key=lambda label: (-scores[label], label))
    return [LabelScore(label, scores[label], votes.get(label, 0))
            for label in ranked[: max_labels or None]]


async def classify(core: SearchCore, name: str, queries: Sequence[Query], label_key: str,
                   k: int, max_labels: int, remaining: float | None = None,
                   source: ClassSource = ClassSource.LABELLED,
                   names_weight: float | None = None) -> list[Classification]:
    check.check_count("queries", len(queries), check.MAX_QUERIES)
    if source is not ClassSource.NAMES:
        check.check_metadata_key(label_key)
    neighbours = check.check_bounded("k", k, 1, 1000, 10)
    if not 0 <= max_labels <= 1000:
        raise InvalidArgument(f"max_labels must be 0 (all) to 1000; got {max_labels}")
    weight = check.check_names_weight(names_weight, NAMES_WEIGHT)
    record = await core.collection(name)
    vectors = [refused(_NO_FEEDBACK) if query.feedback is not None else vector
               for query, vector in zip(queries, await core.query_vectors(
                   record, queries, remaining), strict=True)]
    voted = ([[] for _ in queries] if source is ClassSource.NAMES else
             await _votes(core, record, queries, vectors, label_key, neighbours))
    named = ([{} for _ in queries] if source is ClassSource.LABELLED else
             await _named(core, record, vectors, max_labels))
    return [Classification([], vector) if isinstance(vector, Outcome)
            else Classification(mix(votes, names, weight, max_labels))
            for vector, votes, names in zip(vectors, voted, named, strict=True)]


async def _named(core: SearchCore, record: CollectionRecord, vectors: list[Embedding],
                 max_labels: int) -> list[dict[str, float]]:
    named = await class_names.scores(core, record, vectors,
                                     max(class_names.CANDIDATES, max_labels))
    # Only when nothing was found: a count per call would cost every query a round trip.
    if not any(named) and any(not isinstance(v, Outcome) for v in vectors) and not (
            await class_names.count(core, record)):
        raise FailedPrecondition(f"collection {record.name!r} has no class names to classify "
                                 "by: add them first (AddClassNames)")
    return named


async def _votes(core: SearchCore, record: CollectionRecord, queries: Sequence[Query],
                 vectors: list[Embedding], label_key: str, neighbours: int
                 ) -> list[list[LabelScore]]:
    labelled = (Condition(label_key, Op.EXISTS),)
    own = max(len(query.own_ids) for query in queries)
    found = await core.nearest(record, vectors, neighbours + own, labelled)
    # An indexed image never votes for itself (leave-one-out), nor do the indexed images a
    # compound query is made of.
    return [_vote(without(hits, query.own_ids, neighbours), label_key)
            for query, hits in zip(queries, found, strict=True)]
