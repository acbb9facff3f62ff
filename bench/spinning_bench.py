"""Embedder throughput with ONNX Runtime's thread spinning on and off, side by side.

    python -m bench.spinning_bench [--bundle DIR] [--images N] [--rounds R]

StreamEmbedImages over the 19 photos of bench/copy_data.py (JPEG, 640 px on the longer side,
so decoding and copy signals see varied content), with and without copy signals, for
EMBEDDER_INTRA_OP_SPINNING true (ONNX Runtime's default) and false (ours). Each figure is the
best of R rounds; each row's ratios are against spinning on, and signals against none.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from bench import copy_data
from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc


def photos() -> list[bytes]:
    encoded = []
    for image in copy_data.photos().values():
        image = image.convert("RGB")
        image.thumbnail((640, 640))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


async def stream_rate(stub: embedder_pb2_grpc.EmbedderServiceStub, images: list[bytes],
                      total: int, signal: bool) -> float:
    async def requests() -> AsyncIterator[pb.StreamEmbedImagesRequest]:
        for n in range(total):
            yield pb.StreamEmbedImagesRequest(id=str(n), include_copy_signal=signal,
                                              image=pb.ImageInput(data=images[n % len(images)]))

    started = time.perf_counter()
    count = sum([1 async for _ in stub.StreamEmbedImages(requests())])
    return count / (time.perf_counter() - started)


async def measure(bundle: Path, spinning: bool, images: list[bytes], total: int,
                  rounds: int) -> dict[bool, float]:
    server = EmbedderServer(EmbedderSettings(
        bundle=bundle, port=0, log_level="WARNING", providers=["CPUExecutionProvider"],
        intra_op_spinning=spinning))
    await server.start()
    best = {False: 0.0, True: 0.0}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            await stream_rate(stub, images, len(images), True)  # warm-up
            for _ in range(rounds):
                for signal in (False, True):
                    rate = await stream_rate(stub, images, total, signal)
                    best[signal] = max(best[signal], rate)
    finally:
        await server.stop(grace=1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = photos()
    results = {spinning: asyncio.run(measure(args.bundle, spinning, images, args.images,
                                             args.rounds))
               for spinning in (True, False)}
    on = results[True]
    print("| spinning | img/s, no signals | img/s, copy signals | signals / none |"
          " vs spinning on, no signals | vs spinning on, signals |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spinning, best in results.items():
        print(f"| {'on' if spinning else 'off'} | {best[False]:.1f} | {best[True]:.1f} | "
              f"{best[True] / best[False]:.2f}x | {best[False] / on[False]:.2f}x | "
              f"{best[True] / on[True]:.2f}x |")


if __name__ == "__main__":
    main()
