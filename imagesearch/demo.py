"""The offline demo: both services on the embedded defaults, a generated image set, searches.

    make demo        (or: python -m imagesearch.demo)

Starts the real entry points (`imagesearch-embedder` with the bundled model, `imagesearch-search`
with a Milvus Lite file) on free loopback ports, creates a collection, indexes generated images
with metadata, prints text and image search results, and stops both services with SIGTERM.
Run from a terminal (or with --serve) it first keeps them running for the search page, which
the search service serves over HTTP, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc

DATA = Path("data")
SAMPLES = DATA / "demo-images"
COLLECTION = "demo"
# Each query with a scene it describes; two renderings of each are planted among random scenes.
QUERIES = {
    "a red circle": synthetic.Scene("red", "circle", 1, "large", "center", "white"),
    "two blue squares": synthetic.Scene("blue", "square", 2, "small", "center", "gray"),
    "a yellow star on a dark background": synthetic.Scene("yellow", "star", 1, "large", "left",
                                                          "dark"),
    "a small green triangle": synthetic.Scene("green", "triangle", 1, "small", "top", "white"),
    "three pink crosses": synthetic.Scene("pink", "cross", 3, "small", "center", "gray"),
}


def make_samples(count: int = 120, seed: int = 2026) -> list[tuple[Path, synthetic.Scene]]:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    for old in SAMPLES.glob("*.png"):
        old.unlink()
    rng = random.Random(seed)
    scenes = [synthetic.random_scene(rng) for _ in range(count - 2 * len(QUERIES))]
    scenes += [scene for scene in QUERIES.values() for _ in range(2)]
    rng.shuffle(scenes)
    samples = []
    for index, scene in enumerate(scenes):
        noun = scene.shape if scene.count == 1 else synthetic.plural(scene.shape)
        path = SAMPLES / f"{index:03d}-{scene.count}-{scene.colour}-{noun}.png"
        synthetic.render(scene, 128, rng).save(path)
        samples.append((path, scene))
    return samples


def start(program: str, env: dict[str, str], log_path: Path,
          listeners: tuple[str, ...] = ("listening",)
          ) -> tuple[subprocess.Popen[bytes], list[str]]:
    """Starts a service on free ports; its JSON log says which ports it got, one address per
    log message in `listeners`."""
    exe = Path(sys.executable).with_name(program)
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(exe)], env={**os.environ, **env}, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        found = {}
        for line in log_path.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") in listeners:
                found[entry["msg"]] = entry["address"]
        if len(found) == len(listeners):
            return process, [found[name] for name in listeners]
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{program} did not start:\n{log_path.read_text()[-2000:]}")


async def wait_serving(address: str, timeout: float = 60) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.2)
    raise SystemExit(f"service at {address} did not become ready")


def metadata(scene: synthetic.Scene) -> dict[str, pb.MetadataValue]:
    return {"colour": pb.MetadataValue(string_value=scene.colour),
            "shape": pb.MetadataValue(string_value=scene.shape),
            "count": pb.MetadataValue(int_value=scene.count)}


async def index(stub: search_pb2_grpc.SearchServiceStub,
                samples: list[tuple[Path, synthetic.Scene]]) -> None:
    started = time.perf_counter()
    for start_at in range(0, len(samples), 32):
        batch = samples[start_at:start_at + 32]
        response = await stub.AddImages(pb.AddImagesRequest(collection=COLLECTION, images=[
            pb.NewImage(id=path.name, data=path.read_bytes(), metadata=metadata(scene))
            for path, scene in batch]))
        failed = [r.message for r in response.results if r.code != 0]
        if failed:
            raise SystemExit(f"indexing failed: {failed}")
        print(f"\rindexed {start_at + len(batch)}/{len(samples)}", end="", flush=True)
    print(f" in {time.perf_counter() - started:.2f}s")


def show(title: str, result: pb.QueryResult) -> None:
    print(f"\n{title}")
    for rank, hit in enumerate(result.hits, 1):
        print(f"  {rank}. {hit.similarity:.3f}  {hit.id}")


async def run(address: str, samples: list[tuple[Path, synthetic.Scene]]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        existing = await stub.ListCollections(pb.ListCollectionsRequest(page_size=1000))
        if COLLECTION in {c.name for c in existing.collections}:
            await stub.DeleteCollection(pb.DeleteCollectionRequest(name=COLLECTION))
        created = await stub.CreateCollection(pb.CreateCollectionRequest(
            name=COLLECTION, description="generated shapes"))
        model = created.collection.model
        print(f"collection '{COLLECTION}' with model {model.name} ({model.dimension}-d)")
        await index(stub, samples)
        response = await stub.Search(pb.SearchRequest(collection=COLLECTION, top_k=3, queries=[
            pb.Query(text=text) for text in QUERIES]))
        for text, result in zip(QUERIES, response.results, strict=True):
            show(f'text: "{text}"', result)
        query_id = samples[0][0].name
        response = await stub.Search(pb.SearchRequest(
            collection=COLLECTION, top_k=3, queries=[pb.Query(image_id=query_id)]))
        show(f"image: {query_id}", response.results[0])
        response = await stub.Search(pb.SearchRequest(
            collection=COLLECTION, top_k=3, queries=[pb.Query(text="a shape")],
            filter=[pb.Condition(key="colour", operator=pb.OPERATOR_EQUAL,
                                 values=[pb.MetadataValue(string_value="purple")])]))
        show('text: "a shape", filtered to colour == "purple"', response.results[0])


def wait_for_ctrl_c(page: str) -> None:
    print(f"\nThe search page: {page} (search, duplicates, classify; Ctrl-C stops the "
          "services)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the services running for the search page until Ctrl-C "
                             "(default: when run from a terminal)")
    serve = parser.parse_args().serve
    if serve is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty()
    samples = make_samples()
    print(f"generated {len(samples)} sample images in {SAMPLES}/")
    log_env = {"EMBEDDER_LOG_FORMAT": "json", "SEARCH_LOG_FORMAT": "json"}
    embedder, [embedder_address] = start(
        "imagesearch-embedder", {**log_env, "EMBEDDER_PORT": "0"}, DATA / "embedder.log")
    processes = [embedder]
    try:
        search, [search_address, http_address] = start(
            "imagesearch-search",
            {**log_env, "SEARCH_PORT": "0", "SEARCH_HTTP_PORT": "0",
             "SEARCH_EMBEDDER_TARGET": embedder_address,
             "SEARCH_MILVUS_URI": str(DATA / "demo.db")}, DATA / "search.log",
            ("listening", "http/json listening"))
        processes.append(search)
        print(f"embedder on {embedder_address}, search service on {search_address} "
              f"(logs in {DATA}/)")
        asyncio.run(wait_serving(embedder_address))
        asyncio.run(wait_serving(search_address))
        asyncio.run(run(search_address, samples))
        if serve:
            wait_for_ctrl_c(f"http://127.0.0.1:{http_address.rsplit(':', 1)[1]}/")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=30) for process in processes]
        print(f"\nservices stopped (exit codes {codes})")


if __name__ == "__main__":
    main()
