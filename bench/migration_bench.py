"""What moving a collection to another model costs, measured side by side in one run.

One embedder serves the bundled model and the second one (`make second-model`); a collection
of generated scenes is built on the first, the two models are evaluated on its labels
(EvaluateModels), then it is migrated to the second while a client adds and searches:

- the copy's rate (images embedded again per second, start to switch);
- add and search latency before the migration and during it (writes are embedded by both
  models while it runs), as ratios;
- the kept pixels' size per image (what SEARCH_KEEP_PIXELS=normalized stores), for the
  generated scenes and for real photos, and so the store's cost per million images.

    python -m bench.migration_bench [--images 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench import copy_data
from bench.stack import search_stack
from embedder_service.settings import BUNDLED_MODEL
from imagesearch.search.v1 import search_pb2 as pb
from search_service.core import PIXELS_KIND
from tests.search_fixtures import add, scene_images

SECOND_MODEL = BUNDLED_MODEL.parent / "synthetic-clip-wide"


async def timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def latencies(stub, collection: str, fresh, rounds: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Adds of 8 images and searches (one text, one image query), one after the other."""
    adds, searches = [], []
    for _ in range(rounds):
        batch = [next(fresh) for _ in range(8)]
        adds.append(await timed(add(stub, collection, batch)))
        searches.append(await timed(stub.Search(pb.SearchRequest(
            collection=collection, top_k=10,
            queries=[pb.Query(text="a red circle"), pb.Query(image=batch[0][1])]))))
    return adds, searches


def pixel_bytes(folder: Path) -> list[int]:
    return [p.stat().st_size for p in folder.rglob("*") if PIXELS_KIND in p.parts]


async def run(images: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "bench.db"
        async with search_stack(database, extra_bundles=[SECOND_MODEL],
                                migration_poll_s=0.2, migration_settle_s=1.0) as stub:
            models = (await stub.ListModels(pb.ListModelsRequest())).models
            first, second = (m.model for m in models)
            print(f"models: {first.name} ({first.dimension} d) -> {second.name} "
                  f"({second.dimension} d)")
            await stub.CreateCollection(pb.CreateCollectionRequest(name="bench"))
            items = scene_images(images, seed=1)
            for start in range(0, images, 64):
                await add(stub, "bench", items[start:start + 64])
            started = time.perf_counter()
            report = await stub.EvaluateModels(pb.EvaluateModelsRequest(
                collection="bench", label_key="shape", max_images=min(images, 1000)))
            took = time.perf_counter() - started
            print(f"\nEvaluateModels on {report.evaluations[0].images} images, "
                  f"{report.labels} labels (shape), {took:.1f} s:")
            print(f"{'model':24} {'R@1':>6} {'R@10':>6} {'k-NN':>6} {'zero-shot':>9}")
            for e in report.evaluations:
                print(f"{e.model.name + (' *' if e.is_current else ''):24} "
                      f"{e.recall_at_1:6.3f} {e.recall_at_10:6.3f} {e.knn_accuracy:6.3f} "
                      f"{e.zero_shot_accuracy:9.3f}")
            fresh = iter(("new-" + i, d, s) for i, d, s in scene_images(4000, seed=2))
            before = await latencies(stub, "bench", fresh, 30)
            started = time.perf_counter()
            await stub.StartMigration(pb.StartMigrationRequest(
                collection="bench", model=second.fingerprint))
            during: tuple[list[float], list[float]] = ([], [])
            while True:
                migration = (await stub.GetMigration(pb.GetMigrationRequest(
                    collection="bench"))).migration
                if migration.state == pb.Migration.STATE_SWITCHED:
                    break
                if migration.state not in (pb.Migration.STATE_COPYING,):
                    raise RuntimeError(f"the migration stopped: {migration}")
                if len(during[0]) < 30:
                    step = await latencies(stub, "bench", fresh, 1)
                    during[0].extend(step[0])
                    during[1].extend(step[1])
                else:
                    await asyncio.sleep(0.1)
            copy_s = time.perf_counter() - started
            print(f"\nmigration of {migration.images_total} images (+ writes meanwhile): "
                  f"{copy_s:.1f} s to the switch, {migration.images_copied / copy_s:.0f} "
                  f"images/s copied, {migration.images_skipped} skipped")
            for name, b, d in (("add 8", before[0], during[0]),
                               ("search 2", before[1], during[1])):
                ratio = statistics.median(d) / statistics.median(b)
                print(f"{name:9} p50 before {1000 * statistics.median(b):6.1f} ms, during "
                      f"{1000 * statistics.median(d):6.1f} ms: {ratio:.2f}x")
            scenes = pixel_bytes(Path(str(database) + ".images"))
        # Real photos: what a normalised copy of each weighs.
        with tempfile.TemporaryDirectory() as tmp:
            database = Path(tmp) / "photos.db"
            async with search_stack(database) as stub:
                await stub.CreateCollection(pb.CreateCollectionRequest(name="photos"))
                photos = copy_data.photos()
                await stub.AddImages(pb.AddImagesRequest(collection="photos", images=[
                    pb.NewImage(id=name, data=copy_data.encoded(image))
                    for name, image in photos.items()]))
                real = pixel_bytes(Path(str(database) + ".images"))
    for name, sizes in (("generated scenes", scenes), ("scikit-image photos", real)):
        mean = statistics.mean(sizes)
        print(f"kept pixels, {name}: {len(sizes)} images, mean {mean / 1024:.1f} KB "
              f"(~{mean * 1e6 / 1e9:.0f} GB per million images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.images))


if __name__ == "__main__":
    main()
