"""Copy detection through the services: FindDuplicates and FindDuplicateGroups, copies vs
embedding similarity, side by side in one run.

    python -m bench.copy_service_eval [--bundle DIR] [--distractors 300] [--threshold 0.95]

Both services run in this process on a fresh Milvus Lite file with the folder image store,
the embedder on the given bundle (default: the bundled small model). Indexed: the 19 real
photos of bench/copy_data.py, their REPORT edits (9 each) and generated distractors. Then:

- FindDuplicates with each edited copy as the query (as bytes, not indexed), in COPIES mode
  and in SIMILAR mode at --threshold: per edit, how often its original is found, the share
  of its 10 indexed relatives found (the original and its 9 edited copies: a crop against a
  framed copy, a mirror image against a crop are edits combined), and precision (hits of its
  own photo over all hits);
- FindDuplicateGroups in both modes: pair precision and recall against the true families,
  and the time taken.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import copy_data
from bench.stack import search_stack
from embedder_service.settings import BUNDLED_MODEL
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc

MODES = {"copies": pb.DUPLICATE_MODE_COPIES, "similar": pb.DUPLICATE_MODE_SIMILAR}


def family(image_id: str) -> str:
    return image_id.split("~")[0]


async def run(bundle: Path, distractors: int, threshold: float, folder: Path,
              verbose: bool) -> None:
    async with search_stack(folder / "eval.db", bundle,
                            image_store=str(folder / "images")) as stub:
        await evaluate(stub, distractors, threshold, verbose)


async def evaluate(stub: search_pb2_grpc.SearchServiceStub, distractors: int,
                   threshold: float, verbose: bool = False) -> None:
    rng = random.Random(2026)
    photos = copy_data.photos()
    images = {name: copy_data.encoded(image) for name, image in photos.items()}
    edited = {f"{name}~{edit}": copy_data.encoded(apply(photos[name], rng))
              for name in photos for edit, apply in copy_data.REPORT.items()}
    images.update(edited)
    images.update({f"drawing-{n}": copy_data.encoded(copy_data.distractor(rng))
                   for n in range(distractors)})
    await stub.CreateCollection(pb.CreateCollectionRequest(name="eval"))
    started = time.perf_counter()
    items = list(images.items())
    for start in range(0, len(items), 32):
        response = await stub.AddImages(pb.AddImagesRequest(collection="eval", images=[
            pb.NewImage(id=i, data=d) for i, d in items[start:start + 32]]))
        assert all(r.code == 0 for r in response.results), response
    ingest_s = time.perf_counter() - started
    print(f"indexed {len(images)} images ({len(photos)} photos, {len(edited)} edited copies, "
          f"{distractors} distractors) in {ingest_s:.1f} s\n")

    # Queries: new edited copies (another seed), as bytes.
    queries = {f"{name}~{edit}": copy_data.encoded(apply(photos[name], rng))
               for name in photos for edit, apply in copy_data.REPORT.items()}
    print(f"FindDuplicates, one query per photo and edit; similar at {threshold}\n")
    print("| edit | copies: original found | all copies found | precision | "
          "similar: original found | all copies found | precision |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    totals: dict[str, list[float]] = defaultdict(list)
    timings: dict[str, float] = defaultdict(float)
    for edit in copy_data.REPORT:
        cells = []
        for mode in MODES:
            found = relevant = correct = returned = originals = 0
            for name in photos:
                truth = {name} | {f"{name}~{e}" for e in copy_data.REPORT}
                tick = time.perf_counter()
                response = await stub.FindDuplicates(pb.FindDuplicatesRequest(
                    collection="eval", query=pb.Query(image=queries[f"{name}~{edit}"]),
                    max_results=50, mode=MODES[mode], min_similarity=(
                        threshold if mode == "similar" else 0.0)))
                timings[mode] += time.perf_counter() - tick
                ids = {h.id for h in response.duplicates}
                found += len(ids & truth)
                originals += name in ids
                if verbose and mode == "copies" and name not in ids:
                    print(f"  missed: {edit} {name}, the original ranks "
                          f"{await _rank(stub, queries[f'{name}~{edit}'], name)} by similarity")
                if verbose and any(family(i) != name for i in ids):
                    print(f"  false: {mode} {edit} {name} -> "
                          f"{sorted(i for i in ids if family(i) != name)}")
                relevant += len(truth)
                correct += sum(family(i) == name for i in ids)
                returned += len(ids)
            recall, precision = found / relevant, correct / returned if returned else 1.0
            totals[mode] += [originals / len(photos), recall, precision]
            cells += [f"{originals / len(photos):.3f}", f"{recall:.3f}", f"{precision:.3f}"]
        print(f"| {edit} | " + " | ".join(cells) + " |")
    count = len(copy_data.REPORT)
    summary = [f"{sum(totals[m][i::3]) / count:.3f}" for m in MODES for i in (0, 1, 2)]
    print("| mean | " + " | ".join(summary) + " |")
    calls = len(queries)
    print(f"\nlatency per call: copies {1000 * timings['copies'] / calls:.0f} ms, similar "
          f"{1000 * timings['similar'] / calls:.0f} ms\n")

    truth_pairs = {frozenset(p) for name in photos for p in itertools.combinations(
        [name] + [f"{name}~{e}" for e in copy_data.REPORT], 2)}
    print("FindDuplicateGroups (neighbours 10)\n")
    print("| mode | pair precision | pair recall | groups | largest | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode in MODES:
        tick = time.perf_counter()
        response = await stub.FindDuplicateGroups(pb.FindDuplicateGroupsRequest(
            collection="eval", mode=MODES[mode],
            min_similarity=threshold if mode == "similar" else 0.0))
        seconds = time.perf_counter() - tick
        pairs = {frozenset(p) for g in response.groups for p in itertools.combinations(g.ids, 2)}
        right = len(pairs & truth_pairs)
        precision = right / len(pairs) if pairs else 1.0
        largest = max((len(g.ids) for g in response.groups), default=0)
        print(f"| {mode} | {precision:.3f} | {right / len(truth_pairs):.3f} | "
              f"{len(response.groups)} | {largest} | {seconds:.1f} |")


async def _rank(stub: search_pb2_grpc.SearchServiceStub, query: bytes, wanted: str) -> int:
    response = await stub.FindDuplicates(pb.FindDuplicatesRequest(
        collection="eval", query=pb.Query(image=query), max_results=1000, min_similarity=-1.0,
        mode=pb.DUPLICATE_MODE_SIMILAR))
    ids = [h.id for h in response.duplicates]
    return ids.index(wanted) + 1 if wanted in ids else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--verbose", action="store_true", help="print each false hit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(args.bundle, args.distractors, args.threshold, Path(folder),
                        args.verbose))


if __name__ == "__main__":
    main()
