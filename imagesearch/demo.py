"""The offline demo: start the embedder on the bundled model, embed sample images, search them.

    make demo        (or: python -m imagesearch.demo)

Runs the real service entry point (`imagesearch-embedder`) as a child process on a free
loopback port, talks to it over gRPC, prints text->image and image->image results, and stops
the service with SIGTERM (its graceful path) before exiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch import synthetic
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc

SAMPLES = Path("data/demo-images")
# Each query with a scene it describes; two renderings of each are planted among random scenes.
QUERIES = {
    "a red circle": synthetic.Scene("red", "circle", 1, "large", "center", "white"),
    "two blue squares": synthetic.Scene("blue", "square", 2, "small", "center", "gray"),
    "a yellow star on a dark background": synthetic.Scene("yellow", "star", 1, "large", "left",
                                                          "dark"),
    "a small green triangle": synthetic.Scene("green", "triangle", 1, "small", "top", "white"),
    "three pink crosses": synthetic.Scene("pink", "cross", 3, "small", "center", "gray"),
}


def make_samples(count: int = 120, seed: int = 2026) -> list[Path]:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    for old in SAMPLES.glob("*.png"):
        old.unlink()
    rng = random.Random(seed)
    scenes = [synthetic.random_scene(rng) for _ in range(count - 2 * len(QUERIES))]
    scenes += [scene for scene in QUERIES.values() for _ in range(2)]
    rng.shuffle(scenes)
    paths = []
    for index, scene in enumerate(scenes):
        noun = scene.shape if scene.count == 1 else synthetic.plural(scene.shape)
        path = SAMPLES / f"{index:03d}-{scene.count}-{scene.colour}-{noun}.png"
        synthetic.render(scene, 128, rng).save(path)
        paths.append(path)
    return paths


def start_embedder(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Starts the service on a free port; its JSON log says which port it got."""
    env = {**os.environ, "EMBEDDER_PORT": "0", "EMBEDDER_HOST": "127.0.0.1",
           "EMBEDDER_LOG_FORMAT": "json"}
    exe = Path(sys.executable).with_name("imagesearch-embedder")
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(exe)], env=env, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        for line in log_path.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "listening":
                return process, entry["address"]
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"embedder did not start; see {log_path}")


async def wait_serving(channel: grpc.aio.Channel, timeout: float = 60) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        await asyncio.sleep(0.2)
    raise SystemExit("embedder did not become ready")


async def embed_files(stub: embedder_pb2_grpc.EmbedderServiceStub,
                      paths: list[Path]) -> np.ndarray:
    async def requests() -> AsyncIterator[pb.StreamEmbedImagesRequest]:
        for path in paths:
            yield pb.StreamEmbedImagesRequest(id=path.name,
                                              image=pb.ImageInput(data=path.read_bytes()))

    vectors = [r.result.embedding.values async for r in stub.StreamEmbedImages(requests())]
    return np.asarray(vectors, dtype=np.float32)


def print_hits(title: str, scores: np.ndarray, paths: list[Path], k: int = 3) -> None:
    print(f"\n{title}")
    for rank, index in enumerate(np.argsort(-scores)[:k], 1):
        print(f"  {rank}. {scores[index]:.3f}  {paths[index].name}")


async def run(address: str, paths: list[Path]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_serving(channel)
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        info = (await stub.GetModelInfo(pb.GetModelInfoRequest())).model
        print(f"model {info.model_name} ({info.embedding_dim}-d, {info.execution_provider}, "
              f"{info.precision})")
        started = time.perf_counter()
        images = await embed_files(stub, paths)
        print(f"embedded {len(paths)} images in {time.perf_counter() - started:.2f}s")
        texts = await stub.EmbedTexts(pb.EmbedTextsRequest(
            texts=[pb.TextInput(text=q) for q in QUERIES]))
        for query, result in zip(QUERIES, texts.results, strict=True):
            print_hits(f'text: "{query}"', images @ np.asarray(result.embedding.values), paths)
        query_image = await embed_files(stub, paths[:1])
        print_hits(f"image: {paths[0].name}", images @ query_image[0], paths)


def main() -> None:
    paths = make_samples()
    print(f"generated {len(paths)} sample images in {SAMPLES}/")
    log_path = SAMPLES.parent / "embedder.log"
    process, address = start_embedder(log_path)
    print(f"embedder listening on {address} (pid {process.pid}, log: {log_path})")
    try:
        asyncio.run(run(address, paths))
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        print(f"\nembedder stopped (exit code {code})")


if __name__ == "__main__":
    main()
