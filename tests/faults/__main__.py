"""The long fault-injection run: python -m tests.faults --trials 100 [--backend lite|server].

Run it inside scripts/loopback-only.sh (`make faults` does) - the server backend starts a
Milvus server. Prints one line per trial and the totals, and appends them in Markdown to
--report (bench/RESULTS.md is where the recorded runs live).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tests.faults.harness import FAULTS, Harness, Outcome
from tests.faults.processes import Stack
from tests.milvus_server import MilvusServer
from tests.search_fixtures import scene_images

TOTALS = ("mid_stream", "acknowledged", "lost", "missing", "duplicated", "wrong_metadata",
          "cross_tenant", "hung", "client_retries")


def run(backend: str, trials: int, seed: int, workdir: Path) -> list[Outcome]:
    milvus = MilvusServer(workdir / "milvus") if backend == "server" else None
    if milvus is not None:
        milvus.start()
    stack = Stack(workdir / "stack", backend, milvus)
    stack.start()
    images = [data for _, data, _ in scene_images(40, seed=seed)]
    harness = Harness(stack, images, seed)
    outcomes = []
    try:
        harness.prepare()
        for number in range(trials):
            outcome = harness.trial(number)
            outcomes.append(outcome)
            print(f"{time.strftime('%H:%M:%S')} {backend} trial {number}: {outcome.fault} at "
                  f"{outcome.at_s} s for "
                  f"{outcome.down_s} s, {outcome.images} images"
                  f"{' (mid-stream)' if outcome.mid_stream else ''}: "
                  f"{'ok' if outcome.ok else 'VIOLATED'} {outcome.notes[-3:]}", flush=True)
    finally:
        harness.close()
        stack.close()
        if milvus is not None:
            milvus.stop()
    return outcomes


def summary(backend: str, outcomes: list[Outcome]) -> str:
    faults = {f: sum(o.fault == f for o in outcomes) for f in FAULTS}
    totals = {k: sum(getattr(o, k) for o in outcomes) for k in TOTALS}
    return (f"| {backend} | {len(outcomes)} | "
            + ", ".join(f"{f} {n}" for f, n in faults.items() if n)
            + " | " + " | ".join(str(totals[k]) for k in TOTALS)
            + f" | {sum(not o.ok for o in outcomes)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("lite", "server", "both"), default="both")
    parser.add_argument("--trials", type=int, default=100, help="per backend")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    # pymilvus logs a traceback for every refused connection while a Milvus server restarts.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    backends = ("lite", "server") if args.backend == "both" else (args.backend,)
    rows, started = [], time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="faults-"))
    for backend in backends:
        outcomes = run(backend, args.trials, args.seed, workdir / backend)
        rows.append(summary(backend, outcomes))
        bad = [asdict(o) for o in outcomes if not o.ok]
        for violation in bad:
            print("VIOLATION", violation, file=sys.stderr)
    if all(row.endswith("| 0 |") for row in rows):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"the processes' logs are kept in {workdir}", file=sys.stderr)
    header = ("| backend | trials | faults | mid-stream | acknowledged | lost | missing | "
              "duplicated | wrong metadata | cross-tenant | hung | client retries | "
              "trials violated |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    command = "python -m tests.faults " + shlex.join(sys.argv[1:])
    report = (f"\n### Fault injection ({time.strftime('%Y-%m-%d')}, "
              f"{(time.monotonic() - started) / 60:.0f} min)\n\n`{command}` (seed {args.seed})"
              f"\n\n{header}\n" + "\n".join(rows) + "\n")
    print(report)
    if args.report is not None:
        with open(args.report, "a") as out:
            out.write(report)
    return 0 if all(row.endswith("| 0 |") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
