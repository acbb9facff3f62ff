"""Soak: mixed load on the embedded default for minutes, with correctness checked throughout.

    .venv/bin/python -m bench.soak --minutes 10 --concurrency 32 [--report bench/RESULTS.md]

Starts the embedder and the search service (Milvus Lite) as processes, then `concurrency`
workers add (batches of 4), search by text, look for duplicates of an image they stored,
and delete, each in its own id range so the expected contents are known exactly. Every
interval it prints calls/s, p50/p95 latency, errors and both services' RSS; at the end it
compares the stored ids with what was acknowledged. Exit status 1 on any error or mismatch.
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from imagesearch.client import SearchClient
from tests.faults.processes import Service, Stack
from tests.search_fixtures import scene_images

COLLECTION = "soak"
OPS = ("add", "search", "duplicates", "delete")
WEIGHTS = (3, 4, 2, 1)


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.latencies[op].append(seconds)

    def take(self) -> tuple[dict[str, list[float]], list[str]]:
        with self.lock:
            taken, self.latencies = self.latencies, defaultdict(list)
            errors, self.errors = self.errors, []
            return taken, errors


def rss_mb(service: Service) -> float:
    assert service.process is not None
    return _rss_mb(service.process.pid)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Worker(threading.Thread):
    def __init__(self, number: int, client: SearchClient, images: list[bytes], stats: Stats,
                 stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.number, self.client, self.images = number, client, images
        self.stats, self.stop, self.rng = stats, stop, random.Random(seed * 1000 + number)
        self.stored: set[str] = set()
        self._next = 0

    def run(self) -> None:
        while not self.stop.is_set():
            op = self.rng.choices(OPS, WEIGHTS)[0]
            began = time.perf_counter()
            try:
                getattr(self, op)()
            except grpc.RpcError as err:
                with self.stats.lock:
                    self.stats.errors.append(f"{op}: {err.code().name}: {err.details()}")
                continue
            self.stats.record(op, time.perf_counter() - began)

    def add(self) -> None:
        batch = []
        for _ in range(4):
            image_id = f"w{self.number}-{self._next}"
            self._next += 1
            batch.append((image_id, self.rng.choice(self.images), {"worker": self.number}))
        failed = self.client.add_images(COLLECTION, batch)
        if failed:
            raise RuntimeError(f"add failed: {failed}")
        self.stored |= {image_id for image_id, _, _ in batch}

    def search(self) -> None:
        self.client.search(COLLECTION, text=self.rng.choice(
            ["a red circle", "two blue squares", "a small green star"]), top_k=10)

    def duplicates(self) -> None:
        if self.stored:
            self.client.find_duplicates(COLLECTION, image_id=self.rng.choice(sorted(self.stored)))

    def delete(self) -> None:
        if self.stored:
            gone = self.rng.sample(sorted(self.stored), min(2, len(self.stored)))
            self.client.delete_images(COLLECTION, gone)
            self.stored -= set(gone)


def search_rss_mb(stack: Stack, workdir: Path) -> float:
    """The search service's RSS, and its Lite child's where it has one."""
    child = workdir / "search.db.pid"
    extra = _rss_mb(int(child.read_text())) if child.exists() else 0.0
    return rss_mb(stack.search) + extra


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values or [0])[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--interval-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--lite-child", action="store_true",
                        help="Milvus Lite in a child process of the search service "
                             "(bench/lite_child_search.py); RSS adds the child's")
    args = parser.parse_args()
    images = [data for _, data, _ in scene_images(24, seed=args.seed)]
    rows, mismatches, total_errors = [], 0, 0
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = Stack(Path(tmp), "lite")
        if args.lite_child:
            stack.search.module = "bench.lite_child_search"
        stack.start()
        client = SearchClient(stack.search.address, timeout_s=60)
        try:
            client.create_collection(COLLECTION)
            stats, stop = Stats(), threading.Event()
            workers = [Worker(n, client, images, stats, stop, args.seed)
                       for n in range(args.concurrency)]
            for worker in workers:
                worker.start()
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.interval_s)
                taken, errors = stats.take()
                total_errors += len(errors)
                calls = sum(len(v) for v in taken.values())
                every = [x for v in taken.values() for x in v]
                row = (f"| {(time.monotonic() - started) / 60:.1f} | {calls / args.interval_s:.1f}"
                       f" | {percentile(every, 50) * 1000:.0f} | {percentile(every, 95) * 1000:.0f}"
                       + "".join(f" | {percentile(taken[op], 50) * 1000:.0f}" for op in OPS)
                       + f" | {len(errors)} | {search_rss_mb(stack, Path(tmp)):.0f}"
                       f" | {rss_mb(stack.embedder):.0f} |")
                rows.append(row)
                print(row, *errors[:3], flush=True)
            stop.set()
            for worker in workers:
                worker.join(120)
            expected = set().union(*(w.stored for w in workers))
            stored = {image.id for image in client.list_images(COLLECTION, page_size=1000)}
            mismatches = len(expected ^ stored)
            count = client.get_collection(COLLECTION).image_count
        finally:
            client.__exit__(None, None, None)
            stack.close()
    header = ("| minute | calls/s | p50 ms | p95 ms | add p50 | search p50 | duplicates p50 | "
              "delete p50 | errors | search RSS MB | embedder RSS MB |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")
    command = "python -m bench.soak " + shlex.join(sys.argv[1:])
    report = (f"\n### Soak ({time.strftime('%Y-%m-%d')}): `{command}`\n\n{header}\n"
              + "\n".join(rows) + f"\n\nStored at the end: {len(stored)} ids ({count} counted); "
              f"acknowledged and not deleted: {len(expected)}; mismatches: {mismatches}; "
              f"errors: {total_errors}.\n")
    print(report)
    if args.report is not None:
        with open(args.report, "a") as out:
            out.write(report)
    return 0 if mismatches == 0 and total_errors == 0 and count == len(stored) else 1


if __name__ == "__main__":
    sys.exit(main())
