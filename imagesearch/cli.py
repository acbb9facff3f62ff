"""The `imagesearch` command line: index folders, search, find duplicates, classify.

    imagesearch index photos/ --collection trips --create
    imagesearch search "a dog catching a frisbee" -c trips
    imagesearch search --image query.jpg -c trips --json
    imagesearch duplicates -c trips                  (groups across the whole collection)
    imagesearch duplicates -c trips --image new.jpg  (is this one already there?)
    imagesearch classify unknown/*.jpg -c pets --label-key label
    imagesearch --server 127.0.0.1:50051 health      (either service; exit 0 when SERVING)

The server address comes from --server or IMAGESEARCH_SERVER (default 127.0.0.1:50052).
Tables go to stdout, progress to stderr; --json prints machine-readable output instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch.client import Hit, IngestIncomplete, ItemError, NewItem, SearchClient
from imagesearch.metadata import Scalar

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def path_id(relative: str) -> str:
    """The id of a file below the indexed folder: its path with '%' written '%25' and '/'
    (which ids cannot hold) '%2F'. Reversible (id_path), so no two files share an id."""
    return relative.replace("%", "%25").replace("/", "%2F")


def id_path(image_id: str) -> str:
    return re.sub("%2F|%25", lambda m: "/" if m.group() == "%2F" else "%", image_id)


def image_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


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
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total} {rate:.1f}/s")
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
    emit(args, [{"id": h.id, "similarity": round(h.similarity, 6), "metadata": h.metadata}
                for h in hits],
         [(rank, f"{h.similarity:.3f}", h.id, json.dumps(h.metadata) if h.metadata else "")
          for rank, h in enumerate(hits, 1)], ["#", "similarity", "id", "metadata"])


def cmd_index(args: argparse.Namespace, client: SearchClient) -> int:
    files = image_files(args.path)
    if args.create and args.collection not in {c.name for c in client.list_collections()}:
        client.create_collection(args.collection)
    root = args.path if args.path.is_dir() else args.path.parent
    progress = Progress(len(files), "indexing", args.progress or sys.stderr.isatty())

    def items() -> Iterator[NewItem]:  # read lazily: the stream holds a few batches at most
        for path in files:
            relative = path_id(path.relative_to(root).as_posix())
            metadata: dict[str, Scalar] = {"path": str(path)}
            if args.label_from_folder and path.parent != root:
                metadata["label"] = path.parent.name
            yield relative, path.read_bytes(), metadata

    stored: list[str] = []

    def acknowledged(image_id: str, error: ItemError | None) -> None:
        progress.advance(1)
        if error is None:
            stored.append(image_id)

    try:
        failed = client.ingest(args.collection, items(), acknowledged)
    except (grpc.RpcError, IngestIncomplete, KeyboardInterrupt):
        progress.finish()
        # Counted from acknowledgements: only those images are known to be stored.
        print(f"stopped: {len(stored)} of {len(files)} images acknowledged as stored in "
              f"'{args.collection}'; run the same command again to add the rest",
              file=sys.stderr)
        raise
    progress.finish()
    emit(args, {"indexed": len(stored), "failed": [f.__dict__ for f in failed]},
         [(f.id, f.code, f.message) for f in failed], ["failed id", "code", "reason"])
    print(f"indexed {len(stored)} of {len(files)} images into '{args.collection}'",
          file=sys.stderr)
    return 0 if len(stored) == len(files) else 1


def cmd_search(args: argparse.Namespace, client: SearchClient) -> int:
    if (args.text is None) == (args.image is None):
        raise SystemExit("give either a text query or --image FILE")
    image = args.image.read_bytes() if args.image else None
    hits_out(args, client.search(args.collection, text=args.text, image=image,
                                 top_k=args.top_k, filters=args.filter,
                                 min_similarity=args.min_similarity))
    return 0


def cmd_duplicates(args: argparse.Namespace, client: SearchClient) -> int:
    if args.image or args.id:
        image = args.image.read_bytes() if args.image else None
        hits_out(args, client.find_duplicates(args.collection, image=image, image_id=args.id,
                                              min_similarity=args.threshold))
        return 0
    groups = client.duplicate_groups(args.collection, args.threshold)
    emit(args, [{"ids": ids, "min_similarity": round(s, 6)} for ids, s in groups],
         [(n, len(ids), f"{s:.3f}", " ".join(ids)) for n, (ids, s) in enumerate(groups, 1)],
         ["group", "size", "min similarity", "ids"])
    return 0


def cmd_classify(args: argparse.Namespace, client: SearchClient) -> int:
    results = client.classify(args.collection, [f.read_bytes() for f in args.files],
                              args.label_key, args.k)
    emit(args, [{"file": str(f), "labels": [{"label": lab, "confidence": round(c, 6),
                                             "votes": v} for lab, c, v in labels]}
                for f, labels in zip(args.files, results, strict=True)],
         [(f, labels[0][0] if labels else "-", f"{labels[0][1]:.3f}" if labels else "-")
          for f, labels in zip(args.files, results, strict=True)],
         ["file", "label", "confidence"])
    return 0


def cmd_collections(args: argparse.Namespace, client: SearchClient) -> int:
    found = client.list_collections()
    emit(args, [{"name": c.name, "images": c.image_count, "model": c.model.name,
                 "dimension": c.model.dimension} for c in found],
         [(c.name, c.image_count, c.model.name, c.model.dimension) for c in found],
         ["collection", "images", "model", "dimension"])
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """grpc.health.v1 Check; the exit status suits a container HEALTHCHECK (0 or 1, never 2)."""
    credentials = (grpc.ssl_channel_credentials(args.ca_file.read_bytes()) if args.ca_file
                   else None)
    with (grpc.secure_channel(args.server, credentials) if credentials
          else grpc.insecure_channel(args.server)) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"unhealthy: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="imagesearch", description=__doc__.splitlines()[0])
    top.add_argument("--server", default=os.environ.get("IMAGESEARCH_SERVER",
                                                        "127.0.0.1:50052"))
    top.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    top.add_argument("--token", default=os.environ.get("IMAGESEARCH_TOKEN"),
                     help="bearer token (default: $IMAGESEARCH_TOKEN)")
    top.add_argument("--ca-file", type=Path, default=os.environ.get("IMAGESEARCH_CA_FILE"),
                     help="CA (PEM) to verify a TLS server (default: $IMAGESEARCH_CA_FILE)")
    top.add_argument("--json", action="store_true", help="machine-readable output")
    sub = top.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="add every image under a folder")
    index.add_argument("path", type=Path)
    index.add_argument("-c", "--collection", required=True)
    index.add_argument("--create", action="store_true", help="create the collection if needed")
    index.add_argument("--label-from-folder", action="store_true",
                       help="store each image's folder name as metadata 'label'")
    index.add_argument("--progress", action="store_true", help="progress bar even when piped")
    index.set_defaults(run=cmd_index)
    search = sub.add_parser("search", help="search by text or by an image file")
    search.add_argument("text", nargs="?")
    search.add_argument("--image", type=Path)
    search.add_argument("-c", "--collection", required=True)
    search.add_argument("-k", "--top-k", type=int, default=10)
    search.add_argument("--filter", action="append", default=[], help="KEY=VALUE (repeatable)")
    search.add_argument("--min-similarity", type=float)
    search.set_defaults(run=cmd_search)
    dups = sub.add_parser("duplicates", help="near-duplicate groups, or copies of one image")
    dups.add_argument("-c", "--collection", required=True)
    dups.add_argument("--image", type=Path)
    dups.add_argument("--id")
    dups.add_argument("--threshold", type=float, default=0.0, help="similarity; 0: 0.95")
    dups.set_defaults(run=cmd_duplicates)
    classify = sub.add_parser("classify", help="label images by their nearest neighbours")
    classify.add_argument("files", type=Path, nargs="+")
    classify.add_argument("-c", "--collection", required=True)
    classify.add_argument("--label-key", default="label")
    classify.add_argument("-k", type=int, default=10)
    classify.set_defaults(run=cmd_classify)
    sub.add_parser("collections", help="list collections").set_defaults(run=cmd_collections)
    health = sub.add_parser("health", help="is the server (search or embedder) serving?")
    health.add_argument("--service", default="",
                        help="'' (ready), a service's full name, or 'liveness'")
    health.set_defaults(run=None)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "health":
        return cmd_health(args)
    try:
        with SearchClient(args.server, args.timeout, ca_file=args.ca_file,
                          token=args.token) as client:
            code: int = args.run(args, client)
            return code
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2
    except (ValueError, OSError, IngestIncomplete) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
