"""`imagesearch index`: a folder into a collection, once per change.

Every image indexed from a folder carries three metadata entries besides an optional label:
`path` (as given), `folder` (the absolute folder it was indexed from) and `sha256` (of its
bytes). Indexing the folder again embeds only files that are new or whose bytes changed (or
whose label did); `--sync` also deletes the images indexed from this folder whose files are
gone. Images added any other way (the API, another folder) are never touched: a file whose
id one of them holds is refused, not indexed over it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from imagesearch.cli_output import Progress, emit
from imagesearch.client import IngestIncomplete, ItemError, NewItem, SearchClient
from imagesearch.metadata import Scalar, from_value

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class CommandError(Exception):
    """A command that cannot do what was asked; its message says why (exit status 2)."""


def path_id(relative: str) -> str:
    """The id of a file below the indexed folder: its path with '%' written '%25' and '/'
    (which ids cannot hold) '%2F'. Reversible (id_path), so no two files share an id."""
    return relative.replace("%", "%25").replace("/", "%2F")


def id_path(image_id: str) -> str:
    return re.sub("%2F|%25", lambda m: "/" if m.group() == "%2F" else "%", image_id)


def image_files(root: Path) -> list[Path]:
    """The images below `root`, through symlinked folders too (each real folder once: a link
    loop ends), skipping what is not a readable file (a broken link)."""
    if root.is_file():
        return [root]
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        found += [Path(folder, name) for name in names
                  if Path(name).suffix.lower() in IMAGE_SUFFIXES and Path(folder, name).is_file()]
    return sorted(found)


@dataclass(frozen=True)
class Plan:
    to_add: list[tuple[Path, str, dict[str, Scalar]]]  # file, id, metadata
    unchanged: int
    gone: list[str]  # ids indexed from this folder whose files no longer exist
    refused: list[tuple[str, str]]  # id, why it is not indexed


def plan(args: argparse.Namespace, client: SearchClient, files: list[Path], root: Path,
         exists: bool) -> Plan:
    folder = str(root.resolve())
    wanted: dict[str, tuple[Path, dict[str, Scalar]]] = {}
    refused: list[tuple[str, str]] = []
    for path in files:
        image_id = path_id(path.relative_to(root).as_posix())
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            refused.append((image_id, f"cannot read {path}: {err.strerror or err}"))
            continue
        metadata: dict[str, Scalar] = {"path": str(path), "folder": folder, "sha256": digest}
        if args.label_from_folder and path.parent != root:
            metadata["label"] = path.parent.name
        wanted[image_id] = (path, metadata)
    stored = _stored(client, args.collection) if exists else {}
    ours = {image_id: found for image_id, found in stored.items()
            if found.get("folder") == folder}
    for image_id in sorted(set(wanted) & (set(stored) - set(ours))):
        origin = stored[image_id].get("folder")
        refused.append((image_id, "the id holds an image " + (
            f"indexed from {origin}" if origin else "not indexed from a folder")
            + "; not replaced (index each folder into its own collection, or their parent)"))
        del wanted[image_id]
    to_add = [(path, image_id, metadata) for image_id, (path, metadata) in wanted.items()
              if not _same(ours.get(image_id), metadata)]
    # One file names no folder's contents: nothing of its folder is "gone".
    gone = [] if args.path.is_file() else sorted(set(ours) - set(wanted))
    return Plan(to_add, len(wanted) - len(to_add), gone, refused)


def _stored(client: SearchClient, collection: str) -> dict[str, dict[str, Scalar | None]]:
    return {image.id: {key: from_value(value) for key, value in image.metadata.items()}
            for image in client.list_images(collection)}


def _same(stored: dict[str, Scalar | None] | None, metadata: dict[str, Scalar]) -> bool:
    """The same bytes under the same label: nothing to embed again."""
    return stored is not None and all(stored.get(key) == metadata.get(key)
                                      for key in ("sha256", "label"))


def cmd_index(args: argparse.Namespace, client: SearchClient) -> int:
    if not args.path.exists():
        raise CommandError(f"{args.path}: no such file or folder")
    if args.sync and args.path.is_file():
        raise CommandError(f"--sync needs a folder; {args.path} is a file")
    files = image_files(args.path)
    if not files:
        raise CommandError(f"{args.path}: no images in it (looked for "
                           f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    exists = _exists(client, args.collection)
    if args.create and not exists:
        client.create_collection(args.collection, model=args.model)
    root = args.path if args.path.is_dir() else args.path.parent
    work = plan(args, client, files, root, exists)
    stored, failed = ingest(args, client, work)
    removed = 0
    if args.sync and work.gone:
        for start in range(0, len(work.gone), 1000):
            client.delete_images(args.collection, work.gone[start:start + 1000])
        removed = len(work.gone)
    failures = [(f.id, f.code, f.message) for f in failed] + [
        (image_id, "REFUSED", why) for image_id, why in work.refused]
    emit(args, {"indexed": len(stored), "unchanged": work.unchanged, "removed": removed,
                "failed": [{"id": i, "code": c, "message": m} for i, c, m in failures]},
         failures, ["failed id", "code", "reason"])
    print(summary(args, work, len(stored), removed), file=sys.stderr)
    return 0 if len(stored) == len(work.to_add) and not work.refused else 1


def _exists(client: SearchClient, collection: str) -> bool:
    """Without ListCollections, which counts the images of every collection."""
    try:
        client.get_collection(collection)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False
    return True


def summary(args: argparse.Namespace, work: Plan, stored: int, removed: int) -> str:
    text = f"indexed {stored} of {len(work.to_add)} images into '{args.collection}'"
    if work.refused:
        text += f"; {len(work.refused)} not indexed (listed above)"
    if work.unchanged:
        text += f"; {work.unchanged} already there and unchanged"
    if removed:
        text += f"; removed {removed} whose files are gone"
    elif work.gone:
        text += (f"; {len(work.gone)} indexed from this folder have no file any more "
                 "(--sync removes them)")
    return text


def ingest(args: argparse.Namespace, client: SearchClient, work: Plan
           ) -> tuple[list[str], list[ItemError]]:
    progress = Progress(len(work.to_add), "indexing", args.progress or sys.stderr.isatty())

    def items() -> Iterator[NewItem]:  # read lazily: the stream holds a few batches at most
        for path, image_id, metadata in work.to_add:
            yield image_id, path.read_bytes(), metadata

    stored: list[str] = []

    def acknowledged(image_id: str, error: ItemError | None) -> None:
        progress.advance(1)
        if error is None:
            stored.append(image_id)

    try:
        failed = client.ingest(args.collection, items(), acknowledged) if work.to_add else []
    except (grpc.RpcError, IngestIncomplete, KeyboardInterrupt):
        progress.finish()
        # Counted from acknowledgements: only those images are known to be stored.
        print(f"stopped: {len(stored)} of {len(work.to_add)} images acknowledged as stored in "
              f"'{args.collection}'; run the same command again to add the rest",
              file=sys.stderr)
        raise
    progress.finish()
    return stored, failed
