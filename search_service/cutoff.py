"""Adaptive cutoff: keep only the hits that stand out from the rest of a query's list.

A fixed min_similarity is model- and query-specific (one query's relevant images score 0.8,
another's 0.6). The largest-gap rule cuts each list where its similarity drops most between
two consecutive hits, so it follows each query's own scale. Measured against the best fixed
threshold on the bundled model's generated data in bench/RESULTS.md (bench/cutoff_eval.py).
"""

from __future__ import annotations

import enum

from search_service.domain import Hit


class Cutoff(enum.Enum):
    NONE = "none"  # top_k and min_similarity only
    GAP = "gap"  # up to the largest drop in similarity between consecutive hits


def largest_gap(hits: list[Hit]) -> list[Hit]:
    """The hits before the largest drop between neighbours (the first of equal drops); all
    of them when there are fewer than two."""
    drops = [hits[i].similarity - hits[i + 1].similarity for i in range(len(hits) - 1)]
    if not drops or max(drops) <= 0:
        return hits  # nothing stands out: no drop at all
    return hits[:drops.index(max(drops)) + 1]


def apply(cutoff: Cutoff, hits: list[Hit]) -> list[Hit]:
    return largest_gap(hits) if cutoff is Cutoff.GAP else hits
