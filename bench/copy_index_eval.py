"""The copy index's candidates: where each edited copy's original ranks by index hash.

    python -m bench.copy_index_eval --set tuning   # what CENTRE_MARGIN was chosen on
    python -m bench.copy_index_eval --set report   # the figures in bench/RESULTS.md

Indexed: the 19 photos of bench/copy_data.py, every edit of the set of each, and generated
distractors. Each edited copy is the query (its own hash and its mirror's, as FindDuplicates
asks); its original's rank is the number of indexed images nearer to it by Hamming distance,
not counting the copy itself (its siblings, the other edits of its photo, count). With
`--margins`, the same for other centre margins, side by side.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

import numpy as np

from bench import copy_data
from bench.copy_eval import SEEDS
from imagesearch.copies import index
from imagesearch.copies import signal as signals

# FindDuplicates verifies this many of the index's nearest (search_service/duplicates.py).
CANDIDATES = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SEEDS), default="report")
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--margins", type=float, nargs="*", default=[index.CENTRE_MARGIN])
    args = parser.parse_args()
    edits = copy_data.REPORT if args.set == "report" else copy_data.TUNING
    rng = random.Random(SEEDS[args.set])
    indexed = {}
    for name, photo in copy_data.photos().items():
        indexed[name] = signals.compute(photo)
        for edit, apply in edits.items():
            indexed[f"{name}~{edit}"] = signals.compute(apply(photo, rng))
    for number in range(args.distractors):
        indexed[f"distractor{number}"] = signals.compute(copy_data.distractor(rng))
    print(f"set {args.set}: {len(indexed)} images indexed\n")
    print("| margin | edit | originals within the nearest "
          f"{CANDIDATES} | worst rank | median distance |")
    print("| --- | --- | --- | --- | --- |")
    for margin in args.margins:
        index.CENTRE_MARGIN = margin
        for edit, (within, worst, distance) in _ranks(indexed).items():
            print(f"| {margin} | {edit} | {within:.3f} | {worst} | {distance:.0f} |")


def _ranks(indexed: dict[str, signals.CopySignal]) -> dict[str, tuple[float, int, float]]:
    ids = list(indexed)
    hashed = {i: index.hashes(s) for i, s in indexed.items()}
    stored = np.stack([hashed[i][0] for i in ids])
    position = {image_id: n for n, image_id in enumerate(ids)}
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for query in (i for i in ids if "~" in i):
        name, edit = query.split("~")
        plain, mirrored = hashed[query]
        distance = np.minimum((stored != plain).sum(axis=1), (stored != mirrored).sum(axis=1))
        distance[position[query]] = index.BITS + 1
        own = int(distance[position[name]])
        found[edit].append((int((distance < own).sum()), own))
    return {edit: (sum(rank < CANDIDATES for rank, _ in ranks) / len(ranks),
                   max(rank for rank, _ in ranks), float(np.median([d for _, d in ranks])))
            for edit, ranks in found.items()}


if __name__ == "__main__":
    main()
