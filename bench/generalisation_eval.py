"""Does a model bundle know the words, or only the drawing style it was trained on (issue 16)?

    python -m bench.generalisation_eval [--bundle DIR] [--seeds 5]

Caption->image R@1 through the embedder service (in this process, CPU, the bundle's default
precision) over galleries of 48 images, one per colour x shape (count 1, random size, position
and background), captioned as imagesearch.synthetic.held_out_set does ("a red circle", "a photo
of a red circle", "a red circle shape"); each caption must rank its own image first. Galleries
drawn by:
  plain    imagesearch.synthetic.render, the bundled model's own renderer (PNG);
  shifted  bench.shifted_render, a renderer written for evaluation and never trained on (JPEG);
  photos   bench.shifted_render's shapes over unseen photographs (scikit-image's
           EVALUATION_PHOTOS, which the varied training renderer never uses), toned towards
           the background word.
Then whether position, size and count words help: galleries where colour and shape repeat and
only that attribute differs (4 positions; 2 sizes; counts 1-3) per colour x shape; R@1 of
captions naming the attribute against the same captions without it (which can at best guess).
Each figure is the mean over --seeds galleries.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np

from bench import shifted_render
from bench.stack import _ready
from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from imagesearch import synthetic
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from imagesearch.synthetic import Scene
from imagesearch.synthetic_backgrounds import EVALUATION_PHOTOS, photo_background

PAIRS = [(c, s) for c in synthetic.COLOURS for s in synthetic.SHAPES]
Renderer = Callable[[Scene, random.Random], bytes]
Stub = embedder_pb2_grpc.EmbedderServiceStub
CHUNK = 32


def plain(scene: Scene, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    synthetic.render(scene, 96, rng).save(buffer, "PNG")
    return buffer.getvalue()


def shifted(scene: Scene, rng: random.Random) -> bytes:
    return shifted_render.render(scene, 96, rng)


@contextmanager
def _photo_backgrounds() -> Iterator[None]:
    """bench.shifted_render with its backgrounds swapped for unseen photographs: its own
    shapes, shades and degradations, only the background replaced (evaluation only)."""
    original = shifted_render._background
    shifted_render._background = lambda word, canvas, rng: photo_background(
        word, canvas, rng, EVALUATION_PHOTOS)
    try:
        yield
    finally:
        shifted_render._background = original


def photos(scene: Scene, rng: random.Random) -> bytes:
    with _photo_backgrounds():
        return shifted(scene, rng)


RENDERERS: dict[str, Renderer] = {"plain": plain, "shifted": shifted, "photos": photos}


def _name(colour: str, shape: str, count: int = 1) -> str:
    if count == 1:
        return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"
    return f"{('two', 'three')[count - 2]} {colour} {synthetic.plural(shape)}"


def class_gallery(rng: random.Random) -> list[tuple[Scene, str]]:
    """One scene per colour x shape, captioned like synthetic.held_out_set."""
    out = []
    for colour, shape in PAIRS:
        scene = Scene(colour, shape, 1, rng.choice(synthetic.SIZES),
                      rng.choice(synthetic.POSITIONS), rng.choice(list(synthetic.BACKGROUNDS)))
        template = rng.choice(("{}", "a photo of {}", "{} shape"))
        out.append((scene, template.format(_name(colour, shape))))
    return out


def attribute_gallery(attribute: str, rng: random.Random) -> list[tuple[Scene, str, str]]:
    """(scene, caption with the attribute word, caption without it): per colour x shape, one
    scene per value of `attribute`, the rest fixed within that colour x shape."""
    out = []
    for colour, shape in PAIRS:
        background = rng.choice(list(synthetic.BACKGROUNDS))
        size = rng.choice(synthetic.SIZES)
        bare = _name(colour, shape)
        if attribute == "position":
            for place in ("left", "right", "top", "bottom"):
                where = ("at the " if place in ("top", "bottom") else "on the ") + place
                out.append((Scene(colour, shape, 1, "small", place, background),
                            f"{bare} {where}", bare))
        elif attribute == "size":
            for word in synthetic.SIZES:
                article = "an" if word[0] in "aeiou" else "a"
                out.append((Scene(colour, shape, 1, word, "center", background),
                            f"{article} {word} {colour} {shape}", bare))
        else:
            for count in (1, 2, 3):
                out.append((Scene(colour, shape, count, size, "center", background),
                            _name(colour, shape, count), f"{colour} {shape}"))
    return out


async def _embed(stub: Stub, images: list[bytes], texts: list[str]) -> tuple[np.ndarray, ...]:
    image_vectors, text_vectors = [], []
    for start in range(0, len(images), CHUNK):
        reply = await stub.EmbedImages(pb.EmbedImagesRequest(
            images=[pb.ImageInput(data=d) for d in images[start:start + CHUNK]]))
        image_vectors += [r.embedding.values for r in reply.results]
    for start in range(0, len(texts), CHUNK):
        reply = await stub.EmbedTexts(pb.EmbedTextsRequest(
            texts=[pb.TextInput(text=t) for t in texts[start:start + CHUNK]]))
        text_vectors += [r.embedding.values for r in reply.results]
    return np.array(image_vectors), np.array(text_vectors)


def _r_at_1(images: np.ndarray, texts: np.ndarray) -> float:
    return float(((texts @ images.T).argmax(axis=1) == np.arange(len(texts))).mean())


async def class_recall(stub: Stub, render: Renderer, seed: int) -> float:
    rng = random.Random(seed)
    gallery = class_gallery(rng)
    images, texts = await _embed(stub, [render(s, rng) for s, _ in gallery],
                                 [t for _, t in gallery])
    return _r_at_1(images, texts)


async def attribute_recall(stub: Stub, render: Renderer, attribute: str, seed: int
                           ) -> tuple[float, float]:
    """R@1 with the attribute word and without it, over the same gallery."""
    rng = random.Random(seed)
    gallery = attribute_gallery(attribute, rng)
    images, texts = await _embed(stub, [render(s, rng) for s, _, _ in gallery],
                                 [t for _, t, _ in gallery] + [b for _, _, b in gallery])
    return _r_at_1(images, texts[:len(gallery)]), _r_at_1(images, texts[len(gallery):])


async def evaluate(stub: Stub, seeds: list[int], renderers: dict[str, Renderer] = RENDERERS,
                   attribute_renderers: tuple[str, ...] = ("plain", "shifted")) -> None:
    print("| renderer | colour+shape R@1 | per seed |")
    print("|---|---|---|")
    for name, render in renderers.items():
        scores = [await class_recall(stub, render, seed) for seed in seeds]
        print(f"| {name} | {np.mean(scores):.3f} | {' '.join(f'{s:.3f}' for s in scores)} |",
              flush=True)
    print("\n| renderer | attribute | gallery per colour x shape | R@1 with the word | without |")
    print("|---|---|---|---|---|")
    for name in attribute_renderers:
        for attribute, k in (("position", 4), ("size", 2), ("count", 3)):
            pairs = [await attribute_recall(stub, renderers[name], attribute, seed)
                     for seed in seeds]
            with_word, without = np.mean(pairs, axis=0)
            print(f"| {name} | {attribute} | {k} | {with_word:.3f} | {without:.3f} |",
                  flush=True)


async def main(bundle: Path, seeds: list[int], renderers: dict[str, Renderer] = RENDERERS,
               attribute_renderers: tuple[str, ...] = ("plain", "shifted")) -> None:
    server = EmbedderServer(EmbedderSettings(bundle=bundle, port=0, log_level="WARNING",
                                             providers=["CPUExecutionProvider"]))
    await server.start()
    try:
        await _ready(server.port, 1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            info = await stub.GetModelInfo(pb.GetModelInfoRequest())
            served = ", ".join(f"{m.model_name} {m.fingerprint[:19]}" for m in info.models)
            print(f"bundle {bundle}: {served}\n")
            await evaluate(stub, seeds, renderers, attribute_renderers)
    finally:
        await server.stop(grace=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--seeds", type=int, default=5, help="galleries per figure")
    args = parser.parse_args()
    asyncio.run(main(args.bundle, [1000 + i for i in range(args.seeds)]))
