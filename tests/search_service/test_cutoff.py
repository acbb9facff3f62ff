"""The adaptive cutoffs: prefixes of the hits, cut at the largest drop or where the hits stop
standing out of their list (hypothesis)."""

from __future__ import annotations

import itertools
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from search_service.cutoff import ZSCORE, Cutoff, apply, largest_gap, z_scored
from search_service.domain import Hit

similarities = st.lists(st.floats(-1, 1, allow_nan=False), max_size=60).map(
    lambda s: sorted(s, reverse=True))


def hits(values: list[float]) -> list[Hit]:
    return [Hit(f"i{n}", v, {}) for n, v in enumerate(values)]


@settings(max_examples=500, deadline=None, derandomize=True)
@given(similarities)
def test_the_cut_is_a_prefix_ending_at_the_first_largest_drop(values):
    found = hits(values)
    kept = largest_gap(found)
    assert kept == found[:len(kept)] and (kept or not found)
    drops = [a - b for a, b in itertools.pairwise(values)]
    if drops and max(drops) > 0:
        assert drops[len(kept) - 1] == max(drops)
        assert all(d < max(drops) for d in drops[:len(kept) - 1])
    else:
        assert kept == found  # nothing stands out: nothing is cut


def test_a_clear_group_is_kept_and_none_means_no_cut():
    found = hits([0.91, 0.9, 0.88, 0.6, 0.58, 0.5])
    assert [h.external_id for h in apply(Cutoff.GAP, found)] == ["i0", "i1", "i2"]
    assert apply(Cutoff.NONE, found) == found


@settings(max_examples=500, deadline=None, derandomize=True)
@given(similarities)
def test_the_z_score_cut_is_a_prefix_of_those_standing_out(values):
    found = hits(values)
    kept = z_scored(found)
    assert kept == found[:len(kept)] and (kept or not found)
    if len(values) >= 3 and statistics.pstdev(values) > 0:
        bar = statistics.fmean(values) + ZSCORE * statistics.pstdev(values)
        assert all(v >= bar for v in values[1:len(kept)])
        assert all(v < bar for v in values[len(kept):])
    else:
        assert kept == found


def test_a_group_far_above_the_rest_is_kept_by_its_z_score():
    found = hits([0.9, 0.89, 0.88] + [0.5 - 0.001 * n for n in range(30)])
    assert [h.external_id for h in apply(Cutoff.ZSCORE, found)] == ["i0", "i1", "i2"]
    alike = hits([0.5, 0.5, 0.5])
    assert apply(Cutoff.ZSCORE, alike) == alike
