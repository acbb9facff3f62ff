"""Copy detection evaluation: recall per edit and false positives, on copy signals.

    python -m bench.copy_eval --set report      # the figures in bench/RESULTS.md
    python -m bench.copy_eval --set tuning      # what the thresholds were chosen on

Each of 19 real photos (bench/copy_data.py) is edited with every edit of the set; each edited
copy is compared with every original and with the generated distractors. Recall: the copy is
verified against its own original. False positives: a copy verified against another photo or
a distractor. Two more probes of precision: every photo put in the same kind of frame (what
screenshots of different pictures in one application look like), and every photo carrying
the same watermark, compared pairwise. The two
sets share no edit parameters and no distractor seeds.

This measures the verification step (imagesearch.copies.verify) that FindDuplicates runs on
its candidates; the candidates themselves come from the vector index (the query's nearest
50 or more), so a copy the index ranks lower than that is not verified at all.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time

from bench import copy_data
from imagesearch.copies import signal as signals
from imagesearch.copies.verify import compare

SEEDS = {"tuning": 7, "report": 11}
PROBES = {"pad": "kind of frame", "watermark": "watermark"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SEEDS), default="report")
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--misses", action="store_true", help="print each miss's evidence")
    args = parser.parse_args()
    edits = copy_data.REPORT if args.set == "report" else copy_data.TUNING
    rng = random.Random(SEEDS[args.set])
    photos = copy_data.photos()
    started = time.perf_counter()
    originals = {name: signals.compute(image) for name, image in photos.items()}
    distractors = [signals.compute(copy_data.distractor(rng)) for _ in range(args.distractors)]
    computed = len(originals) + len(distractors)
    compute_s = time.perf_counter() - started
    print(f"set {args.set}: {len(photos)} photos x {len(edits)} edits, "
          f"{args.distractors} distractors\n")
    print("| edit | recall | false positives |")
    print("| --- | --- | --- |")
    compared, compare_s = 0, 0.0
    total_found = total_false = total = 0
    for edit, apply in edits.items():
        found = false = 0
        for name, image in photos.items():
            tick = time.perf_counter()
            query = signals.compute(apply(image, rng))
            compute_s += time.perf_counter() - tick
            computed += 1
            tick = time.perf_counter()
            verdicts = [(other, compare(query, signal).is_copy)
                        for other, signal in originals.items()]
            false_hits = sum(compare(query, d).is_copy for d in distractors)
            compare_s += time.perf_counter() - tick
            compared += len(originals) + len(distractors)
            found += any(ok for other, ok in verdicts if other == name)
            if args.misses and not any(ok for other, ok in verdicts if other == name):
                print(f"  miss: {edit} {name} {compare(query, originals[name])}")
            false += false_hits + sum(ok for other, ok in verdicts if other != name)
        print(f"| {edit} | {found / len(photos):.3f} | {false} |")
        total_found, total_false, total = total_found + found, total_false + false, \
            total + len(photos)
    print(f"| all | {total_found / total:.3f} | {total_false} |")
    print()
    for probe in ("pad", "watermark"):
        edited = {name: signals.compute(edits[probe](image, rng))
                  for name, image in photos.items()}
        pairs = list(itertools.combinations(edited, 2))
        false = [(a, b) for a, b in pairs if compare(edited[a], edited[b]).is_copy]
        print(f"different photos with the same {PROBES[probe]}: {len(false)} of {len(pairs)} "
              f"pairs called copies {false or ''}")
    print(f"signal: {1000 * compute_s / computed:.1f} ms per image; verification: "
          f"{1000 * compare_s / compared:.2f} ms per pair ({compared} pairs)")


if __name__ == "__main__":
    main()
