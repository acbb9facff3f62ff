"""Embedder benchmark: every number is measured side by side in one run and printed as a table.

    python -m bench.embedder_bench [--bundle DIR] [--images N]

1. JPEG decode of a 12-megapixel photo: full decode vs draft mode.
2. Text tower: padding trimmed to the longest text vs padded to the full context.
3. Image tower alone (the ceiling): batch 1 and batch 32.
4. Through the gRPC service: one image per call from 1 and from 32 concurrent callers (dynamic
   batching), and StreamEmbedImages; each as a fraction of the ceiling; StreamEmbedImages
   with copy signals as a fraction of without.
5. Text queries through the service: latency p50/p99 at concurrency 1, QPS at concurrency 16.
6. int8 vs fp32 towers, when the bundle has int8.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
from PIL import Image
from skimage import data as skdata

from embedder_service.bundle import load_bundle
from embedder_service.preprocess import ImageLimits, ImagePreprocessor
from embedder_service.runtime import RuntimeOptions, Tower
from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from embedder_service.tokenizer import TextTokenizer
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc

ROWS: list[tuple[str, str, str]] = []


def row(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, value, note))
    print(f"{name:58s} {value:>16s}  {note}", flush=True)


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def photo_bytes(size: tuple[int, int], quality: int = 90) -> bytes:
    image = Image.fromarray(skdata.astronaut()).resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def bench_decode(bundle_dir: Path) -> None:
    config = load_bundle(bundle_dir, verify_checksums=False).manifest.image
    big = photo_bytes((4032, 3024))
    full = ImagePreprocessor(config, ImageLimits(), jpeg_draft=False)
    draft = ImagePreprocessor(config, ImageLimits(), jpeg_draft=True)
    t_full, t_draft = timed(lambda: full(big), 5), timed(lambda: draft(big), 5)
    row("decode+preprocess 12 MP JPEG, full decode", f"{t_full * 1000:.1f} ms")
    row("decode+preprocess 12 MP JPEG, draft mode", f"{t_draft * 1000:.1f} ms",
        f"{t_full / t_draft:.1f}x faster")


def towers(bundle_dir: Path, precision: str) -> tuple[Tower, Tower, TextTokenizer, int]:
    bundle = load_bundle(bundle_dir, verify_checksums=False)
    m, variant = bundle.manifest, bundle.variant(precision)  # type: ignore[arg-type]
    options = RuntimeOptions(providers=("CPUExecutionProvider",))
    tokenizer = TextTokenizer(bundle.path(m.text.tokenizer.file), m.text.tokenizer,
                              m.text.context_length)
    return (Tower(bundle.path(variant.image), options), Tower(bundle.path(variant.text), options),
            tokenizer, m.image.size)


def bench_towers(bundle_dir: Path, precision: str) -> dict[str, float]:
    image, text, tokenizer, size = towers(bundle_dir, precision)
    queries = ["a dog catching a frisbee on the beach"] * 32
    trimmed = tokenizer.pad([t.ids for t in tokenizer.encode_batch(queries)])
    full = np.zeros((32, tokenizer.context_length), dtype=np.int64)
    full[:, : trimmed.shape[1]] = trimmed
    t_trim, t_full = timed(lambda: text.run(trimmed), 5), timed(lambda: text.run(full), 3)
    one = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    batch = np.repeat(one, 32, axis=0)
    t_one, t_batch = timed(lambda: image.run(one), 10), timed(lambda: image.run(batch), 2)
    return {"text_trim": 32 / t_trim, "text_full": 32 / t_full, "image_1": 1 / t_one,
            "image_32": 32 / t_batch}


async def through_service(bundle_dir: Path, images: int) -> None:
    server = EmbedderServer(EmbedderSettings(bundle=bundle_dir, port=0, log_level="WARNING",
                                             providers=["CPUExecutionProvider"]))
    await server.start()
    data = photo_bytes((640, 480))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        one = pb.EmbedImagesRequest(images=[pb.ImageInput(data=data)])
        ceiling = bench_towers(bundle_dir, "fp32")["image_32"]
        for concurrency in (1, 32):
            rate = await _rate(lambda: stub.EmbedImages(one), images, concurrency)
            row(f"service: 1 image per call, {concurrency} concurrent callers",
                f"{rate:.1f} img/s", f"{rate / ceiling:.2f}x of tower at batch 32")
        rate = await _stream_rate(stub, data, images)
        row("service: StreamEmbedImages", f"{rate:.1f} img/s",
            f"{rate / ceiling:.2f}x of tower at batch 32")
        signed = await _stream_rate(stub, data, images, copy_signal=True)
        row("service: StreamEmbedImages with copy signals", f"{signed:.1f} img/s",
            f"{signed / rate:.2f}x of without")
        text = pb.EmbedTextsRequest(texts=[pb.TextInput(text="a red circle on the left")])
        latencies = [await _latency(lambda: stub.EmbedTexts(text)) for _ in range(200)]
        p50, p99 = np.percentile(latencies, [50, 99])
        row("service: text query latency, concurrency 1", f"p50 {p50:.1f} ms",
            f"p99 {p99:.1f} ms")
        qps = await _rate(lambda: stub.EmbedTexts(text), 800, 16)
        row("service: text queries, concurrency 16", f"{qps:.0f} QPS")
    await server.stop(grace=1)


async def _latency(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def _rate(call: Callable[[], Awaitable[object]], total: int, concurrency: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await call()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def _stream_rate(stub: embedder_pb2_grpc.EmbedderServiceStub, data: bytes,
                       total: int, copy_signal: bool = False) -> float:
    async def requests() -> AsyncIterator[pb.StreamEmbedImagesRequest]:
        for i in range(total):
            yield pb.StreamEmbedImagesRequest(id=str(i), image=pb.ImageInput(data=data),
                                              include_copy_signal=copy_signal)

    started = time.perf_counter()
    count = sum([1 async for _ in stub.StreamEmbedImages(requests())])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--images", type=int, default=256, help="images per service run")
    args = parser.parse_args()
    manifest = load_bundle(args.bundle).manifest
    print(f"bundle {manifest.model_name}: image {manifest.image.size}px, "
          f"dim {manifest.embedding_dim}, CPU only\n")
    bench_decode(args.bundle)
    fp32 = bench_towers(args.bundle, "fp32")
    row("text tower, 32 queries, padding trimmed", f"{fp32['text_trim']:.0f} texts/s",
        f"{fp32['text_trim'] / fp32['text_full']:.1f}x of full-context padding")
    row("text tower, 32 queries, full-context padding", f"{fp32['text_full']:.0f} texts/s")
    row("image tower alone, batch 1", f"{fp32['image_1']:.1f} img/s")
    row("image tower alone, batch 32", f"{fp32['image_32']:.1f} img/s",
        f"{fp32['image_32'] / fp32['image_1']:.2f}x of batch 1")
    if "int8" in manifest.variants:
        int8 = bench_towers(args.bundle, "int8")
        row("int8 image tower, batch 32", f"{int8['image_32']:.1f} img/s",
            f"{int8['image_32'] / fp32['image_32']:.2f}x of fp32")
        row("int8 text tower, 32 queries trimmed", f"{int8['text_trim']:.0f} texts/s",
            f"{int8['text_trim'] / fp32['text_trim']:.2f}x of fp32")
    asyncio.run(through_service(args.bundle, args.images))
    print("\n| measurement | result | comparison |\n| --- | --- | --- |")
    for name, value, note in ROWS:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
