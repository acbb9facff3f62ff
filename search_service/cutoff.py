"""Adaptive cutoff: keep only the hits that stand out from the rest of a query's list.

A fixed min_similarity is model- and query-specific (one query's relevant images score 0.8,
another's 0.6). The largest-gap rule cuts each list where its similarity drops most between
two consecutive hits, so it follows each query's own scale. The z-score rule normalises each
list by its own spread instead: it keeps the hits that score ZSCORE standard deviations above
the list's mean, so one close pair of hits at the top (which the largest gap cuts after) does
not decide. Both measured against the best fixed threshold on the bundled model's generated
data in bench/RESULTS.md (bench/cutoff_eval.py).
"""

from __future__ import annotations

import enum
import statistics

from search_service.domain import Hit

# Standard deviations above the mean of a query's hits that a hit must score to be kept: chosen
# by F1 on a tuning collection of its own (bench/cutoff_eval.py), apart from the report's.
ZSCORE = 1.5


class Cutoff(enum.Enum):
    NONE = "none"  # top_k and min_similarity only
    GAP = "gap"  # up to the largest drop in similarity between consecutive hits
    ZSCORE = "zscore"  # the hits ZSCORE standard deviations above the mean of the list


def largest_gap(hits: list[Hit]) -> list[Hit]:
    """The hits before the largest drop between neighbours (the first of equal drops); all
    of them when there are fewer than two."""
    drops = [hits[i].similarity - hits[i + 1].similarity for i in range(len(hits) - 1)]
    if not drops or max(drops) <= 0:
        return hits  # nothing stands out: no drop at all
    return hits[:drops.index(max(drops)) + 1]


def z_scored(hits: list[Hit], z: float = ZSCORE) -> list[Hit]:
    """The hits (sorted by similarity, best first) at least `z` population standard
    deviations above their mean; all of them when there are fewer than three or they all
    score alike - nothing stands out then."""
    values = [h.similarity for h in hits]
    if len(values) < 3:
        return hits
    spread = statistics.pstdev(values)
    if spread <= 0:
        return hits
    bar = statistics.fmean(values) + z * spread
    return [h for h in hits if h.similarity >= bar] or hits[:1]


def apply(cutoff: Cutoff, hits: list[Hit]) -> list[Hit]:
    if cutoff is Cutoff.GAP:
        return largest_gap(hits)
    return z_scored(hits) if cutoff is Cutoff.ZSCORE else hits
