"""Compound queries and relevance feedback: a query as a plan of atoms (single texts, images,
indexed images and vectors) and how their unit vectors fold into one.

The core embeds the atoms of every query of a request together (one embedder call per kind,
one store read for every indexed image), then each query's plan folds its own: a compound
query into the weighted sum of its parts, feedback into Rocchio's refinement. The math is
search.v1's (CompoundQuery, Feedback), in float64:

    compound:  q  = s / |s|,  s = sum_i w_i * e_i
    feedback:  q' = r / |r|,  r = a * q + b * mean(positives) - c * mean(negatives)

refused when the terms cancel out (the sum's length under MIN_RESIDUAL of their total weight).
No I/O here: plans and folds are plain functions, tested without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imagesearch.errors import InvalidArgument
from search_service import validation as check
from search_service.domain import Embedding, Feedback, Outcome, Problem, Query, refused

# Rocchio's classic weights (Manning, Raghavan & Schuetze, Introduction to Information
# Retrieval, 9.1.1): the examples steer the query without replacing it, and negative
# judgements, which are less reliable, count for less.
QUERY_WEIGHT, POSITIVE_WEIGHT, NEGATIVE_WEIGHT = 1.0, 0.75, 0.15
# A sum whose length is under this share of its terms' total weight has no direction left
# worth searching in: what remains is the noise of the parts that cancelled.
MIN_RESIDUAL = 0.01
_KINDS = ("text", "image", "image_id", "vector")
EMPTY = "query is empty: set text, image, image_id, vector or compound"


def kind(query: Query) -> str | None:
    """Which single kind an atom is (None: no kind set)."""
    return next((k for k in _KINDS if getattr(query, k) is not None), None)


@dataclass(frozen=True)
class Plan:
    """A valid query: the atoms to embed (its own - itself, or its parts - then the positive
    and the negative examples), and how they fold into its vector."""

    query: Query
    atoms: tuple[Query, ...]
    weights: tuple[float, float, float] = (QUERY_WEIGHT, POSITIVE_WEIGHT, NEGATIVE_WEIGHT)

    @property
    def own(self) -> int:
        return len(self.query.parts) if self.query.parts is not None else 1

    def fold(self, vectors: Sequence[Embedding], collection: str) -> Embedding:
        own, rest = vectors[:self.own], vectors[self.own:]
        vector = self._own(own)
        if isinstance(vector, Outcome) or self.query.feedback is None:
            return vector
        return self._refined(vector, rest, collection)

    def _own(self, vectors: Sequence[Embedding]) -> Embedding:
        if self.query.parts is None:
            return vectors[0]
        units: list[np.ndarray] = []
        failed: list[tuple[int, str | None, Outcome]] = []
        for n, (part, vector) in enumerate(zip(self.query.parts, vectors, strict=True), 1):
            if isinstance(vector, Outcome):
                failed.append((n, kind(part.query), vector))
            else:
                units.append(vector)
        if failed:
            return refused("; ".join(f"part {n} ({k}): {o.message}" for n, k, o in failed),
                           failed[0][2].problem or Problem.INTERNAL)
        return weighted_sum(units, [part.weight for part in self.query.parts], "the parts")

    def _refined(self, query: np.ndarray, examples: Sequence[Embedding],
                 collection: str) -> Embedding:
        feedback = self.query.feedback
        assert feedback is not None
        found: list[np.ndarray] = []
        missing: list[str] = []
        for external_id, vector in zip(feedback.positive_ids + feedback.negative_ids,
                                       examples, strict=True):
            if isinstance(vector, Outcome):
                missing.append(external_id)
            else:
                found.append(vector)
        if missing:
            return refused(f"feedback examples are not in collection {collection!r}: "
                           f"{', '.join(repr(i) for i in dict.fromkeys(missing))}",
                           Problem.NOT_FOUND)
        split = len(feedback.positive_ids)
        return rocchio(query, found[:split], found[split:], self.weights)


def plan(query: Query) -> Plan | Outcome:
    """The query's plan, or why it is refused (each bad part named by its position)."""
    try:
        weights = _feedback_weights(query.feedback)
    except InvalidArgument as err:
        return refused(str(err))
    if query.parts is not None:
        problem = _parts_problem(query)
        if problem is not None:
            return refused(problem)
        own = tuple(part.query for part in query.parts)
    elif kind(query) is None:
        return refused(EMPTY)
    else:
        own = (query,)
    try:
        _check_language(query)
    except InvalidArgument as err:
        return refused(str(err))
    examples: tuple[Query, ...] = ()
    if query.feedback is not None:
        examples = tuple(Query(image_id=i) for i in query.feedback.positive_ids
                         + query.feedback.negative_ids)
    return Plan(query, own + examples, weights)


def _feedback_weights(feedback: Feedback | None) -> tuple[float, float, float]:
    if feedback is None:
        return QUERY_WEIGHT, POSITIVE_WEIGHT, NEGATIVE_WEIGHT
    check.check_examples(feedback.positive_ids, feedback.negative_ids)
    return (check.check_feedback_weight("query_weight", feedback.query_weight, QUERY_WEIGHT),
            check.check_feedback_weight("positive_weight", feedback.positive_weight,
                                        POSITIVE_WEIGHT),
            check.check_feedback_weight("negative_weight", feedback.negative_weight,
                                        NEGATIVE_WEIGHT))


def _check_language(query: Query) -> None:
    if not query.language:
        return
    if query.text is None:
        raise InvalidArgument("language is for text: set it on a text query, or on the text "
                              "parts of a compound query")
    check.check_language(query.language)


def _parts_problem(query: Query) -> str | None:
    assert query.parts is not None
    count = len(query.parts)
    if not 1 <= count <= check.MAX_PARTS:
        return f"compound query has {count} parts; give 1 to {check.MAX_PARTS}"
    problems = []
    for n, part in enumerate(query.parts, 1):
        try:
            check.check_part_weight(part.weight)
            if part.query.parts is not None or part.query.feedback is not None:
                raise InvalidArgument("a part is a text, an image, an image_id or a vector, "
                                      "never a compound query or feedback")
            if kind(part.query) is None:
                raise InvalidArgument("part is empty: set text, image, image_id or vector")
            _check_language(part.query)
        except InvalidArgument as err:
            problems.append(f"part {n}: {err}")
    return "; ".join(problems) or None


def weighted_sum(vectors: Sequence[np.ndarray], weights: Sequence[float],
                 what: str) -> Embedding:
    """sum(w_i * v_i), L2-normalised, in float64; refused when the terms cancel out."""
    total = np.zeros(vectors[0].shape, dtype=np.float64)
    for vector, weight in zip(vectors, weights, strict=True):
        total += float(weight) * vector.astype(np.float64)
    length = float(np.linalg.norm(total))
    scale = float(sum(abs(w) for w in weights))
    if not length >= MIN_RESIDUAL * scale or length == 0:
        return refused(
            f"{what} cancel out: their weighted sum has length {length:.3g}, under "
            f"{MIN_RESIDUAL:g} of their total weight {scale:.3g}, so it has no direction to "
            "search in; change the weights or drop the parts that oppose each other")
    unit: np.ndarray = (total / length).astype(np.float32)
    return unit


def rocchio(query: np.ndarray, positives: Sequence[np.ndarray],
            negatives: Sequence[np.ndarray], weights: tuple[float, float, float]) -> Embedding:
    """a * q + b * mean(positives) - c * mean(negatives), normalised; a side without
    examples (or with weight 0) is left out of the sum and of its total weight."""
    a, b, c = weights
    terms: list[tuple[np.ndarray, float]] = [(query, a)] if a else []
    if positives and b:
        terms.append((np.mean(np.stack(positives).astype(np.float64), axis=0), b))
    if negatives and c:
        terms.append((np.mean(np.stack(negatives).astype(np.float64), axis=0), -c))
    if not terms:
        return refused("feedback leaves nothing to search by: query_weight is 0 and no "
                       "examples with a non-zero weight were given")
    return weighted_sum([t for t, _ in terms], [w for _, w in terms],
                        "the query and its feedback")
