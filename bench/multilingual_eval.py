"""Text->image R@1 per language through the embedder service, against rendered scenes.

    scripts/loopback-only.sh .venv/bin/python -m bench.multilingual_eval [--bundle DIR]

Starts the embedder on 127.0.0.1 (port 0) with the bundle, embeds a gallery of the repo's
rendered scenes (imagesearch.synthetic: every colour x shape at counts 1-3, 144 images) with
EmbedImages, and each language's captions with EmbedTexts and that language (English: no
language, the default tower). A hit is a top-1 image of the caption's colour and shape.
Held out: the pairs the multilingual tower never saw (imagesearch.synthetic_i18n); seen: the
other 40 pairs, in captions naming colour, shape and count. Ratios are to English.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
from pathlib import Path

import grpc
import numpy as np

from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from imagesearch import synthetic
from imagesearch import synthetic_i18n as i18n
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc

ALL_PAIRS = frozenset((c, s) for c in synthetic.COLOURS for s in synthetic.SHAPES)


def gallery(seed: int) -> tuple[list[tuple[str, str]], list[bytes]]:
    rng = random.Random(seed)
    labels, images = [], []
    for colour, shape in sorted(ALL_PAIRS):
        for count in (1, 2, 3):
            scene = synthetic.Scene(colour, shape, count, rng.choice(synthetic.SIZES),
                                    rng.choice(synthetic.POSITIONS) if count == 1 else "center",
                                    rng.choice(list(synthetic.BACKGROUNDS)))
            buffer = io.BytesIO()
            synthetic.render(scene, 96, rng).save(buffer, "PNG")
            labels.append((colour, shape))
            images.append(buffer.getvalue())
    return labels, images


async def embed_texts(stub: embedder_pb2_grpc.EmbedderServiceStub, texts: list[str],
                      language: str) -> tuple[np.ndarray, set[str]]:
    vectors, towers = [], set()
    for start in range(0, len(texts), 256):
        response = await stub.EmbedTexts(pb.EmbedTextsRequest(
            texts=[pb.TextInput(text=t) for t in texts[start:start + 256]], language=language))
        vectors += [list(r.embedding.values) for r in response.results]
        towers |= {r.text_tower for r in response.results}
    return np.asarray(vectors, dtype=np.float32), towers


def recall_at_1(queries: np.ndarray, wanted: list[tuple[str, str]], images: np.ndarray,
                labels: list[tuple[str, str]]) -> float:
    top = (queries @ images.T).argmax(axis=1)
    return float(np.mean([labels[i] == pair for i, pair in zip(top, wanted, strict=True)]))


async def evaluate(stub: embedder_pb2_grpc.EmbedderServiceStub, seed: int) -> None:
    labels, data = gallery(seed)
    response = await stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=d) for d in data]))
    images = np.asarray([r.embedding.values for r in response.results], dtype=np.float32)
    splits = {"held-out": i18n.held_out_specs(),
              "seen": i18n.held_out_specs(ALL_PAIRS - i18n.HELD_OUT_PAIRS)}
    rows: dict[str, dict[str, float]] = {}
    print(f"{len(images)} images; held-out captions per language: {len(splits['held-out'])}, "
          f"seen: {len(splits['seen'])}\n")
    print("| language | tower | R@1 held-out | ratio to en | R@1 seen pairs | ratio to en |")
    print("| --- | --- | --- | --- | --- | --- |")
    for language in i18n.LANGUAGES:
        rows[language] = {}
        for split, specs in splits.items():
            texts = [i18n.render(spec, language) for spec in specs]
            vectors, towers = await embed_texts(stub, texts, "" if language == "en" else language)
            rows[language][split] = recall_at_1(vectors, [s.pair for s in specs], images, labels)
        en, r = rows["en"], rows[language]
        print(f"| {language} | {', '.join(sorted(towers))} | {r['held-out']:.3f} | "
              f"{r['held-out'] / en['held-out']:.2f} | {r['seen']:.3f} | "
              f"{r['seen'] / en['seen']:.2f} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    server = EmbedderServer(EmbedderSettings(bundle=args.bundle, port=0, host="127.0.0.1"))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await evaluate(embedder_pb2_grpc.EmbedderServiceStub(channel), args.seed)
    finally:
        await server.stop(grace=1)


if __name__ == "__main__":
    asyncio.run(main())
