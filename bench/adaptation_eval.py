"""Learned use of stored feedback (FitAdaptation) where the bundled model is weak: text->image
R@1 on images drawn by another renderer (bench.shifted_render) before and after rounds of
simulated feedback, and on the model's own renderer (imagesearch.synthetic) as a check that
nothing is lost there.

    python -m bench.adaptation_eval [--images 600] [--rounds 10] [--per-round 48]

Both services run in this process on a fresh Milvus Lite file (bench.stack). Each collection
holds the same scenes (seed 1), drawn by one renderer. A round: --per-round feedback queries,
captions of fresh random scenes (imagesearch.synthetic.caption, seed 2 and on), searched with
the collection's current adaptation, top 10 judged relevant or not against the scene's colour
and shape, recorded (RecordFeedback), then FitAdaptation (enable) and GetAdaptation until
the fit is done. Reported: R@1 of the report queries - per colour x shape, "a red circle" and
"a picture of a red circle" (96), never used for feedback (no feedback caption equals one,
and "picture of" is not a phrasing caption() makes) - after 0 (none), 1, 3 and 10 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import tempfile
import time
from pathlib import Path

import grpc

from bench import shifted_render
from bench.stack import search_stack
from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc

PAIRS = [(c, s) for c in synthetic.COLOURS for s in synthetic.SHAPES]
REPORTED_ROUNDS = (0, 1, 3, 10)
Stub = search_pb2_grpc.SearchServiceStub


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def report_queries() -> list[tuple[str, str]]:
    """(caption, label) per colour x shape, in two phrasings."""
    return [(template.format(_article(c), c, s), f"{c} {s}") for c, s in PAIRS
            for template in ("{} {} {}", "a picture of {} {} {}")]


def _png(scene: synthetic.Scene, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    synthetic.render(scene, 96, rng).save(buffer, "PNG")
    return buffer.getvalue()


async def fill(stub: Stub, name: str, scenes: list[synthetic.Scene], shifted: bool
               ) -> dict[str, str]:
    rng = random.Random(11)
    await stub.CreateCollection(pb.CreateCollectionRequest(name=name))
    labels = {f"i{n:04d}": s.label for n, s in enumerate(scenes)}
    ids = list(labels)
    for start in range(0, len(ids), 64):
        await stub.AddImages(pb.AddImagesRequest(collection=name, images=[pb.NewImage(
            id=i, data=shifted_render.render(scenes[int(i[1:])], 96, rng) if shifted
            else _png(scenes[int(i[1:])], rng)) for i in ids[start:start + 64]]))
    return labels


async def top(stub: Stub, name: str, texts: list[str], k: int) -> list[list[str]]:
    out = []
    for start in range(0, len(texts), 64):
        response = await stub.Search(pb.SearchRequest(collection=name, top_k=k, queries=[
            pb.Query(text=t) for t in texts[start:start + 64]]))
        out += [[h.id for h in r.hits] for r in response.results]
    return out


async def recall_at_1(stub: Stub, name: str, labels: dict[str, str]) -> float:
    queries = report_queries()
    found = await top(stub, name, [q for q, _ in queries], 1)
    return sum(bool(f) and labels[f[0]] == label
               for f, (_, label) in zip(found, queries, strict=True)) / len(queries)


async def feedback_round(stub: Stub, name: str, labels: dict[str, str], round_: int,
                         per_round: int) -> pb.Adaptation:
    rng = random.Random(1000 + round_)
    reported = {q for q, _ in report_queries()}
    asked: list[tuple[str, str]] = []
    while len(asked) < per_round:
        scene = synthetic.random_scene(rng)
        text = synthetic.caption(scene, rng)
        if text not in reported:
            asked.append((text, scene.label))
    for (text, label), hits in zip(asked, await top(stub, name, [t for t, _ in asked], 10),
                                   strict=True):
        await stub.RecordFeedback(pb.RecordFeedbackRequest(
            collection=name, query=pb.Query(text=text),
            relevant_ids=[i for i in hits if labels[i] == label],
            not_relevant_ids=[i for i in hits if labels[i] != label]))
    await stub.FitAdaptation(pb.FitAdaptationRequest(collection=name, enable=True))
    while True:
        state = (await stub.GetAdaptation(pb.GetAdaptationRequest(collection=name))).adaptation
        if state.fit_state != pb.FIT_STATE_FITTING:
            return state
        await asyncio.sleep(0.2)


async def rounds(stub: Stub, name: str, labels: dict[str, str], count: int, per_round: int
                 ) -> list[tuple[int, float, pb.Adaptation | None, float]]:
    rows: list[tuple[int, float, pb.Adaptation | None, float]] = [
        (0, await recall_at_1(stub, name, labels), None, 0.0)]
    try:
        await stub.FitAdaptation(pb.FitAdaptationRequest(collection=name, enable=True))
    except grpc.aio.AioRpcError as err:
        print(f"{name}: fit with no feedback: {err.code().name}: {err.details()}")
    for round_ in range(1, count + 1):
        started = time.monotonic()
        state = await feedback_round(stub, name, labels, round_, per_round)
        rows.append((round_, await recall_at_1(stub, name, labels), state,
                     time.monotonic() - started))
    return rows


def table(name: str, rows: list[tuple[int, float, pb.Adaptation | None, float]]) -> None:
    print(f"\n{name}\n| rounds | R@1 | map | queries used | judgements | held-out P@1 before "
          "-> after | round s |\n|---|---|---|---|---|---|---|")
    for round_, recall, state, seconds in rows:
        if state is None:
            print(f"| {round_} | {recall:.3f} | - | - | - | - | - |")
            continue
        print(f"| {round_} | {recall:.3f} | {'on' if state.enabled else 'off'} | "
              f"{state.queries_used} | {state.judgements_used} | "
              f"{state.held_out_precision_before:.2f} -> {state.held_out_precision_after:.2f} "
              f"({state.held_out_queries}) | {seconds:.1f} |")


async def main(images: int, count: int, per_round: int) -> None:
    rng = random.Random(1)
    scenes = [synthetic.random_scene(rng) for _ in range(images)]
    # Milvus Lite may still be writing its files as the stack stops: the figures are printed
    # before, and a folder it leaves behind is not an error of the evaluation.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        async with search_stack(Path(folder) / "adapt.db") as stub:
            results = {}
            for name, shifted in (("shifted", True), ("original", False)):
                labels = await fill(stub, name, scenes, shifted)
                results[name] = await rounds(stub, name, labels, count, per_round)
                table(f"{name} renderer, {images} images", results[name])
    inside = results["original"][0][1]
    for round_ in REPORTED_ROUNDS:
        if round_ < len(results["shifted"]):
            gap = inside - results["shifted"][round_][1]
            print(f"gap to in-domain R@1 ({inside:.3f}) after {round_} rounds: {gap:+.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=48)
    args = parser.parse_args()
    asyncio.run(main(args.images, args.rounds, args.per_round))
