"""What the `imagesearch` command line prints: tables or JSON on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from imagesearch.client import Hit


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.done, self.started = 0, time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled:
            filled = int(30 * self.done / max(self.total, 1))
            rate = self.done / max(time.monotonic() - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total} {rate:.1f}/s, {_duration(left)} left ")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def emit(args: argparse.Namespace, data: Any, rows: Sequence[Sequence[Any]],
         headers: Sequence[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else table(rows, headers))


def hits_out(args: argparse.Namespace, hits: list[Hit]) -> None:
    if any(h.match for h in hits):  # duplicates: what kind of match each is
        emit(args, [{"id": h.id, "match": h.match, "similarity": round(h.similarity, 6),
                     "metadata": h.metadata} for h in hits],
             [(rank, h.match, f"{h.similarity:.3f}", h.id,
               json.dumps(h.metadata) if h.metadata else "") for rank, h in enumerate(hits, 1)],
             ["#", "match", "similarity", "id", "metadata"])
        return
    emit(args, [{"id": h.id, "similarity": round(h.similarity, 6), "metadata": h.metadata}
                for h in hits],
         [(rank, f"{h.similarity:.3f}", h.id, json.dumps(h.metadata) if h.metadata else "")
          for rank, h in enumerate(hits, 1)], ["#", "similarity", "id", "metadata"])


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
