"""Adaptive cutoff (Search's CUTOFF_LARGEST_GAP) against fixed min_similarity thresholds, on
labelled data: the bundled model's own generated scenes (imagesearch.synthetic).

    python -m bench.cutoff_eval [--images 600] [--top-k 100] [--report bench/RESULTS.md]

Both services run in this process on a fresh Milvus Lite file. Each class present ("a red
circle": colour and shape) is queried by its caption; its relevant images are the indexed
images of that class. Per query: precision and recall of what is returned, then their means
over queries (macro), F1 of each query averaged, and how many queries got nothing back. The
fixed thresholds are swept and the best (by mean F1) is picked on the same queries - an
oracle's choice, which favours the fixed threshold; the gap rule has no parameter to tune. The
z-score rule's one parameter (search_service.cutoff.ZSCORE) is picked on a tuning collection of
other scenes (seed 7), never on the report's; the report shows the served CUTOFF_Z_SCORE and the
rule at the tuned z (the same when the constant is the tuned value).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.stack import search_stack
from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from search_service import cutoff
from search_service.domain import Hit
from tests.conftest import encode

THRESHOLDS = [round(0.30 + 0.05 * n, 2) for n in range(14)]  # 0.30 .. 0.95
ZS = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
Classes = list[tuple[str, str]]


def scores(returned: Sequence[str], relevant: set[str]) -> tuple[float, float, float, bool]:
    hits = sum(i in relevant for i in returned)
    precision = hits / len(returned) if returned else 0.0
    recall = hits / len(relevant)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1, not returned


def summary(rows: list[tuple[float, float, float, bool]]) -> tuple[float, float, float, int]:
    n = len(rows)
    return (sum(r[0] for r in rows) / n, sum(r[1] for r in rows) / n,
            sum(r[2] for r in rows) / n, sum(r[3] for r in rows))


async def indexed(stub: search_pb2_grpc.SearchServiceStub, name: str, seed: int, count: int
                  ) -> tuple[Classes, dict[tuple[str, str], set[str]]]:
    """A collection of `count` generated scenes: its classes and each class's images."""
    rng = random.Random(seed)
    scenes = {f"s{n:04d}": synthetic.random_scene(rng) for n in range(count)}
    await stub.CreateCollection(pb.CreateCollectionRequest(name=name))
    ids = list(scenes)
    for start in range(0, count, 64):
        await stub.AddImages(pb.AddImagesRequest(collection=name, images=[
            pb.NewImage(id=i, data=encode(synthetic.render(scenes[i], 96, rng)))
            for i in ids[start:start + 64]]))
    classes = sorted({(s.colour, s.shape) for s in scenes.values()})
    relevant = {c: {i for i, s in scenes.items() if (s.colour, s.shape) == c} for c in classes}
    return classes, relevant


def z_rows(classes: Classes, relevant: dict[tuple[str, str], set[str]],
           plain: list[pb.QueryResult], z: float) -> tuple[float, float, float, int]:
    return summary([scores([h.external_id for h in cutoff.z_scored(
        [Hit(h.id, h.similarity, {}) for h in r.hits], z)], relevant[c])
        for c, r in zip(classes, plain, strict=True)])


async def tuned_z(stub: search_pb2_grpc.SearchServiceStub, count: int, top_k: int) -> float:
    classes, relevant = await indexed(stub, "cutoff-tuning", 7, count)
    plain = await _search(stub, "cutoff-tuning", _queries(classes), top_k, pb.CUTOFF_NONE)
    f1 = {z: z_rows(classes, relevant, plain, z)[2] for z in ZS}
    print("z-score cutoff, F1 on the tuning collection: "
          + ", ".join(f"z {z}: {v:.3f}" for z, v in f1.items()))
    return max(ZS, key=lambda z: f1[z])


async def evaluate(stub: search_pb2_grpc.SearchServiceStub, count: int, top_k: int
                   ) -> list[tuple[str, tuple[float, float, float, int]]]:
    z = await tuned_z(stub, count, top_k)
    classes, relevant = await indexed(stub, "cutoff", 2026, count)
    queries = _queries(classes)
    plain = await _search(stub, "cutoff", queries, top_k, pb.CUTOFF_NONE)
    gap = await _search(stub, "cutoff", queries, top_k, pb.CUTOFF_LARGEST_GAP)
    served_z = await _search(stub, "cutoff", queries, top_k, pb.CUTOFF_Z_SCORE)
    rows = [(f"fixed >= {t:.2f}", summary([scores(
        [h.id for h in r.hits if h.similarity >= t], relevant[c])
        for c, r in zip(classes, plain, strict=True)])) for t in THRESHOLDS]
    best = max(rows, key=lambda row: row[1][2])
    return [(f"best {best[0]} (oracle)", best[1]),
            (f"largest gap, top_k {top_k}", summary([
                scores([h.id for h in r.hits], relevant[c])
                for c, r in zip(classes, gap, strict=True)])),
            (f"z-score as served (z {cutoff.ZSCORE}), top_k {top_k}", summary([
                scores([h.id for h in r.hits], relevant[c])
                for c, r in zip(classes, served_z, strict=True)])),
            (f"z-score at the tuned z {z}, top_k {top_k}",
             z_rows(classes, relevant, plain, z)), *rows]


def _queries(classes: Classes) -> list[pb.Query]:
    return [pb.Query(text=f"a {c} {s}") for c, s in classes]


async def _search(stub: search_pb2_grpc.SearchServiceStub, name: str, queries: list[pb.Query],
                  top_k: int, cut: pb.Cutoff) -> list[pb.QueryResult]:
    out: list[pb.QueryResult] = []
    for start in range(0, len(queries), 64):
        response = await stub.Search(pb.SearchRequest(
            collection=name, queries=queries[start:start + 64], top_k=top_k, cutoff=cut))
        out += response.results
    return out


async def run(count: int, top_k: int, folder: Path) -> list[tuple[str, tuple]]:
    async with search_stack(folder / "cutoff.db") as stub:
        return await evaluate(stub, count, top_k)


def table(rows: list[tuple[str, tuple]], count: int, top_k: int) -> str:
    lines = [f"### Adaptive cutoff: `python -m bench.cutoff_eval --images {count} --top-k "
             f"{top_k}`", "",
             "| cutoff | precision | recall | F1 | queries answered with nothing |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} | {e} |" for name, (p, r, f, e) in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--report", type=Path, help="append the table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        rows = asyncio.run(run(args.images, args.top_k, Path(folder)))
    text = table(rows, args.images, args.top_k)
    print(text)
    if args.report:
        with args.report.open("a") as report:
            report.write("\n" + text)


if __name__ == "__main__":
    main()
