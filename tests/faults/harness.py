"""Randomized fault injection against the real processes, and the invariants that must hold.

Each trial streams a fresh collection's images through `SearchClient.ingest` while another
thread searches it, and at a seeded random moment SIGKILLs or SIGSTOPs one process - the
embedder, the search service, or the Milvus server - then restarts or resumes it. After the
trial (and the client's own retry, where ingest gave up):

- every acknowledged image is stored, with its metadata (lost = acknowledged, not stored);
- every input image is stored exactly once (missing, duplicated);
- no call outlived the fault by more than its deadline, and the ingest finished within its
  budget after the stack recovered (hung);
- no search returned another collection's image, and a neighbouring collection, written
  before the trials, is unchanged (cross_tenant).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from imagesearch.client import IngestIncomplete, SearchClient
from imagesearch.search.v1 import search_pb2 as pb
from tests.faults.processes import Stack

FAULTS = ("kill-embedder", "kill-search", "freeze-embedder", "freeze-search", "kill-milvus",
          "freeze-milvus")
CALL_TIMEOUT_S = 20.0
# After the stack is serving again, how long the ingest (with retries) may still take.
BUDGET_S = 90.0
NEIGHBOUR = "neighbour"
PACE_S = 0.004


@dataclass
class Outcome:
    trial: int
    fault: str
    at_s: float
    down_s: float
    images: int
    acknowledged: int = 0
    lost: int = 0
    missing: int = 0
    duplicated: int = 0
    wrong_metadata: int = 0
    cross_tenant: int = 0
    hung: int = 0
    client_retries: int = 0
    # Whether the fault struck while the ingest was still running (it should, mostly).
    mid_stream: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.missing or self.duplicated or self.wrong_metadata
                    or self.cross_tenant or self.hung)


def _retrying(call: Callable[[], object], until_s: float) -> object:
    """A setup or check call, retried while the stack is coming back."""
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > until_s:
                raise
            time.sleep(0.5)


class Harness:
    def __init__(self, stack: Stack, images: list[bytes], seed: int,
                 faults: tuple[str, ...] = FAULTS) -> None:
        self.stack = stack
        self.images = images
        self.rng = random.Random(seed)
        self.faults = tuple(f for f in faults if stack.milvus is not None or "milvus" not in f)
        self.client = SearchClient(stack.search.address, CALL_TIMEOUT_S)
        self._neighbour: dict[str, dict[str, object]] = {}

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def prepare(self) -> None:
        """The neighbouring collection every trial must leave alone."""
        until = time.monotonic() + 60
        _retrying(lambda: self.client.create_collection(NEIGHBOUR), until)
        items = [(f"n-{i}", data, {"owner": NEIGHBOUR, "i": i})
                 for i, data in enumerate(self.images[:12])]
        assert not self.client.ingest(NEIGHBOUR, items)
        self._neighbour = self._snapshot(NEIGHBOUR, until)

    def _snapshot(self, collection: str, until_s: float) -> dict[str, dict[str, object]]:
        def listed() -> list[pb.StoredImage]:
            return list(self.client.list_images(collection, page_size=200))
        images = _retrying(listed, until_s)
        assert isinstance(images, list)
        ids = [i.id for i in images]
        if len(ids) != len(set(ids)):
            raise AssertionError(f"{collection} lists an id twice")
        return {i.id: {k: getattr(v, v.WhichOneof("kind") or "string_value")
                       for k, v in i.metadata.items()} for i in images}

    def trial(self, number: int, fault: str | None = None) -> Outcome:
        """One trial; its fault drawn from the seeded generator unless given."""
        drawn = self.rng.choice(self.faults)
        fault = fault or drawn
        outcome = Outcome(number, fault, round(self.rng.uniform(0.1, 2.0), 2),
                          round(self.rng.uniform(0.0, 3.0), 2), self.rng.randint(150, 400))
        collection = f"trial-{number}"
        items = [(f"t{number}-{i:04d}", self.images[i % len(self.images)],
                  {"trial": number, "i": i}) for i in range(outcome.images)]
        started = time.monotonic()
        _retrying(lambda: self.client.create_collection(collection), started + 120)
        acked: set[str] = set()
        done = threading.Event()
        searcher = threading.Thread(target=self._search, args=(collection, number, outcome,
                                                                done), daemon=True)
        ingester = threading.Thread(target=self._ingest, args=(collection, items, acked,
                                                                outcome), daemon=True)
        searcher.start()
        ingester.start()
        recovered = self._inject(outcome, ingester)
        ingester.join(max(0.0, recovered + BUDGET_S - time.monotonic()))
        if ingester.is_alive():
            outcome.hung += 1
            outcome.notes.append("ingest still running after its budget")
        done.set()
        searcher.join(CALL_TIMEOUT_S + 5)
        self._check(collection, items, acked, outcome)
        outcome.seconds = round(time.monotonic() - started, 1)
        return outcome

    def _ingest(self, collection: str, items: list[tuple[str, bytes, dict[str, object]]],
                acked: set[str], outcome: Outcome) -> None:
        def on_ack(image_id: str, error: object) -> None:
            if error is None:
                acked.add(image_id)
            else:
                outcome.notes.append(f"{image_id} failed: {error}")

        def paced() -> Iterator[tuple[str, bytes, dict[str, object]]]:
            for item in items:  # a steady producer: the stream lasts a second or two
                time.sleep(PACE_S)
                yield item

        for attempt in range(4):
            try:
                self.client.ingest(collection, paced(), on_ack)  # type: ignore[arg-type]
                return
            except (grpc.RpcError, IngestIncomplete) as err:
                # The client gave up while something was down: the caller retries it all.
                outcome.client_retries = attempt + 1
                reason = err.code().name if isinstance(err, grpc.RpcError) else str(err)
                outcome.notes.append(f"ingest raised {reason}")
                self.stack.search.wait_serving(120)

    def _search(self, collection: str, number: int, outcome: Outcome,
                done: threading.Event) -> None:
        prefix = f"t{number}-"
        while not done.is_set():
            began = time.monotonic()
            try:
                hits = self.client.search(collection, text="a red circle", top_k=20)
                strangers = [h.id for h in hits if not h.id.startswith(prefix)]
                if strangers:
                    outcome.cross_tenant += len(strangers)
                    outcome.notes.append(f"search returned {strangers[:3]}")
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                    outcome.notes.append(f"search failed {err.code().name}: {err.details()}")
            if time.monotonic() - began > CALL_TIMEOUT_S + 5:
                outcome.hung += 1
                outcome.notes.append("a search outlived its deadline")
            time.sleep(0.1)

    def _inject(self, outcome: Outcome, ingester: threading.Thread) -> float:
        """Applies the fault, undoes it; returns when the stack is serving again."""
        time.sleep(outcome.at_s)
        outcome.mid_stream = ingester.is_alive()
        kind, target = outcome.fault.split("-")
        if target == "milvus":
            assert self.stack.milvus is not None
            if kind == "kill":
                self.stack.milvus.kill()
                time.sleep(outcome.down_s)
                self.stack.milvus.start()
            else:
                self.stack.milvus.freeze()
                time.sleep(outcome.down_s)
                self.stack.milvus.thaw()
        else:
            service = self.stack.embedder if target == "embedder" else self.stack.search
            if kind == "kill":
                service.kill()
                time.sleep(outcome.down_s)
                service.start(wait_s=None)
            else:
                service.freeze()
                time.sleep(outcome.down_s)
                service.thaw()
        self.stack.embedder.wait_serving(120)
        self.stack.search.wait_serving(180)
        return time.monotonic()

    def _check(self, collection: str, items: list[tuple[str, bytes, dict[str, object]]],
               acked: set[str], outcome: Outcome) -> None:
        until = time.monotonic() + 120
        stored = self._snapshot(collection, until)
        outcome.acknowledged = len(acked)
        outcome.lost = len(acked - stored.keys())
        outcome.missing = len({i for i, _, _ in items} - stored.keys())
        got = _retrying(lambda: self.client.get_collection(collection), until)
        count = got.image_count  # type: ignore[attr-defined]
        outcome.duplicated = max(0, count - len(stored))
        expected = {i: m for i, _, m in items}
        outcome.wrong_metadata = sum(stored[i] != expected.get(i) for i in stored)
        if self._snapshot(NEIGHBOUR, until) != self._neighbour:
            outcome.cross_tenant += 1
            outcome.notes.append("the neighbouring collection changed")
        _retrying(lambda: self.client.delete_collection(collection), until)
