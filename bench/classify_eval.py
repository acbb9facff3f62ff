"""Classify's accuracy on the bundled model's scenes (imagesearch.synthetic, 48 colour x shape
classes): zero-shot by class names, a k-NN vote of labelled images, and the two mixed.

    python -m bench.classify_eval [--test 480] [--shots 1 4 16] [--report bench/RESULTS.md]

Both services run in this process on a fresh Milvus Lite file. Per number of shots, one
collection holds that many labelled images of every class (label "red circle") and the test
images, unlabelled (they never vote), each classified by its id; the 48 class names are added
with AddClassNames. Top-1 accuracy; the mix weight is swept to show where the default sits.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path

from bench.stack import search_stack
from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from tests.conftest import encode

CLASSES = [f"{c} {s}" for c in synthetic.COLOURS for s in synthetic.SHAPES]
WEIGHTS = (0.25, 0.5, 0.75)


def labelled(shots: int, rng: random.Random) -> list[pb.NewImage]:
    """`shots` images of every class, drawn until each has them."""
    wanted = {label: shots for label in CLASSES}
    out: list[pb.NewImage] = []
    while any(wanted.values()):
        scene = synthetic.random_scene(rng)
        if wanted[scene.label]:
            wanted[scene.label] -= 1
            out.append(pb.NewImage(id=f"train-{len(out):05d}", data=encode(
                synthetic.render(scene, 96, rng)), metadata={
                    "label": pb.MetadataValue(string_value=scene.label)}))
    return out


def tests(count: int) -> tuple[list[pb.NewImage], dict[str, str]]:
    rng = random.Random(7)
    scenes = {f"test-{n:05d}": synthetic.random_scene(rng) for n in range(count)}
    return ([pb.NewImage(id=i, data=encode(synthetic.render(s, 96, rng)))
             for i, s in scenes.items()], {i: s.label for i, s in scenes.items()})


async def fill(stub: search_pb2_grpc.SearchServiceStub, name: str,
               images: list[pb.NewImage]) -> None:
    await stub.CreateCollection(pb.CreateCollectionRequest(name=name))
    for start in range(0, len(images), 64):
        await stub.AddImages(pb.AddImagesRequest(collection=name,
                                                 images=images[start:start + 64]))
    await stub.AddClassNames(pb.AddClassNamesRequest(collection=name, names=CLASSES))


async def accuracy(stub: search_pb2_grpc.SearchServiceStub, name: str, truth: dict[str, str],
                   source: pb.ClassSource, weight: float | None = None) -> float:
    ids, right = list(truth), 0
    for start in range(0, len(ids), 64):
        request = pb.ClassifyRequest(collection=name, label_key="label", k=10, max_labels=1,
                                     source=source, queries=[
                                         pb.Query(image_id=i) for i in ids[start:start + 64]])
        if weight is not None:
            request.names_weight = weight
        response = await stub.Classify(request)
        right += sum(bool(r.labels) and r.labels[0].label == truth[i]
                     for i, r in zip(ids[start:start + 64], response.results, strict=True))
    return right / len(ids)


async def evaluate(stub: search_pb2_grpc.SearchServiceStub, count: int, shots: list[int]
                   ) -> list[tuple[int, dict[str, float]]]:
    images, truth = tests(count)
    rows = []
    for n in shots:
        name = f"shots-{n}"
        await fill(stub, name, labelled(n, random.Random(n)) + images)
        row = {"zero-shot (names)": await accuracy(stub, name, truth, pb.CLASS_SOURCE_NAMES),
               "k-NN (k 10)": await accuracy(stub, name, truth,
                                             pb.CLASS_SOURCE_LABELLED_IMAGES)}
        for weight in WEIGHTS:
            row[f"both, w {weight}"] = await accuracy(stub, name, truth, pb.CLASS_SOURCE_BOTH,
                                                      weight)
        rows.append((n, row))
    return rows


async def run(count: int, shots: list[int], folder: Path) -> list[tuple[int, dict[str, float]]]:
    async with search_stack(folder / "classify.db") as stub:
        return await evaluate(stub, count, shots)


def table(rows: list[tuple[int, dict[str, float]]], count: int, shots: list[int]) -> str:
    columns = list(rows[0][1])
    lines = [f"### Classify, zero-shot and k-NN: `python -m bench.classify_eval --test {count} "
             f"--shots {' '.join(map(str, shots))}`", "",
             f"Top-1 accuracy over {count} test scenes, 48 classes (chance 0.021).", "",
             "| labelled images per class | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {n} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |"
              for n, row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=int, default=480)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--report", type=Path, help="append the table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = asyncio.run(run(args.test, args.shots, Path(folder)))
    text = table(rows, args.test, args.shots)
    print(text)
    if args.report:
        with args.report.open("a") as report:
            report.write("\n" + text)


if __name__ == "__main__":
    main()
