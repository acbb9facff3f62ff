"""What asking for copy signals costs the embedder's throughput, side by side.

    python -m bench.signal_cost_bench [--bundle DIR] [--images N] [--rounds R]
                                      [--signals 512x8x1.2 384x8x1.2 320x8x1.2]

StreamEmbedImages over the 19 photos of bench/copy_data.py (JPEG, 640 px on the longer side),
without copy signals and with them for each way of computing them (the side ORB runs on, x
its pyramid's levels, x their scale factor), on one in-process embedder; the rounds
interleave the settings so that other work on the machine weighs on each alike. Each figure is
the best of R rounds. The signal's own cost is timed too, on one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import grpc

from bench import copy_data
from bench.spinning_bench import photos, stream_rate
from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL, EmbedderSettings
from imagesearch.copies import signal as signals
from imagesearch.embedder.v1 import embedder_pb2_grpc

Setting = tuple[int, int, float]


def parse_setting(text: str) -> Setting:
    side, levels, scale = text.lower().split("x")
    return int(side), int(levels), float(scale)


def use(setting: Setting) -> None:
    """The bench's knob: the signal module's constants (the server runs in this process)."""
    signals.ORB_SIDE, signals.ORB_LEVELS, signals.ORB_SCALE_FACTOR = setting


def signal_ms(setting: Setting, repeats: int = 5) -> float:
    use(setting)
    images = [image.convert("RGB") for image in copy_data.photos().values()]
    for image in images:
        image.thumbnail((640, 640))
    started = time.perf_counter()
    for _ in range(repeats):
        for image in images:
            signals.compute(image)
    return (time.perf_counter() - started) / (repeats * len(images)) * 1000


async def measure(bundle: Path, settings: list[Setting], total: int,
                  rounds: int) -> dict[Setting | None, float]:
    images = photos()
    server = EmbedderServer(EmbedderSettings(
        bundle=bundle, port=0, log_level="WARNING", providers=["CPUExecutionProvider"]))
    await server.start()
    best: dict[Setting | None, float] = dict.fromkeys([None, *settings], 0.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            await stream_rate(stub, images, len(images), True)  # warm-up
            for _ in range(rounds):
                for setting in best:
                    if setting is not None:
                        use(setting)
                    rate = await stream_rate(stub, images, total, setting is not None)
                    best[setting] = max(best[setting], rate)
    finally:
        await server.stop(grace=1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--signals", nargs="+", type=parse_setting,
                        default=[(512, 8, 1.2), (384, 8, 1.2), (320, 8, 1.2)])
    args = parser.parse_args()
    stock = (signals.ORB_SIDE, signals.ORB_LEVELS, signals.ORB_SCALE_FACTOR)
    costs = {setting: signal_ms(setting) for setting in args.signals}
    best = asyncio.run(measure(args.bundle, args.signals, args.images, args.rounds))
    none = best[None]
    print("| copy signal | ORB side x levels x scale | signal, ms of one core | img/s |"
          " vs no signal |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| none | - | - | {none:.1f} | 1.00x |")
    for setting in args.signals:
        side, levels, scale = setting
        label = "yes (this build)" if setting == stock else "yes"
        print(f"| {label} | {side} x {levels} x {scale:g} | {costs[setting]:.1f} | "
              f"{best[setting]:.1f} | {best[setting] / none:.2f}x |")


if __name__ == "__main__":
    main()
