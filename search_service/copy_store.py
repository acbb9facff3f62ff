"""Copy every collection from one Milvus to another: vectors and metadata, nothing embedded again.

    python -m search_service.copy_store --from data/imagesearch.db --to http://milvus:19530

For the move from the embedded default (a Milvus Lite file) to a Milvus server when a
collection outgrows Lite (README, "Where Lite stops"), or back. Stop the search service that
uses the source first (a Lite file opens in one process only); then point SEARCH_MILVUS_URI
at the target. The image store (copy signals, for copy detection) comes along: from the folder
beside a Lite source, or --images-from, to --images-to (a folder or s3://bucket/prefix; the
folder beside a Lite target by default), and the target's copy index is rebuilt from it.
Collections that already exist in the target are refused unless --skip-existing; a copy
that stops half-way can be run again with --replace-partial, which deletes and copies again
the collections whose image counts differ - with whatever was added to the target's copy
since: use it before the service writes to the target.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from search_service import copy_index
from search_service.adapters.milvus.config import is_lite
from search_service.adapters.milvus.store import MilvusStore
from search_service.adapters.milvus.vector_store import open_store
from search_service.core import COPY_KIND, IMAGE_KINDS
from search_service.domain import CollectionRecord, StoredImage
from search_service.errors import CollectionNotFound, ImageStoreUnavailable
from search_service.ports import ImageStore
from search_service.server import open_image_store
from search_service.settings import S3_URI

T = TypeVar("T")

PAGE = 500


def collections(store: MilvusStore) -> list[CollectionRecord]:
    found: list[CollectionRecord] = []
    while page := store.list_collections(100, found[-1].name if found else ""):
        found += page
    return found


class ImageCopier:
    """Carries what the image store keeps of each copied image to another image store, and
    rebuilds the target's copy index from the copy signals (the index is derived from them)."""

    def __init__(self, source: ImageStore, target: ImageStore) -> None:
        self._source, self._target = source, target
        # The stores are asynchronous; this command is not.
        self._loop = asyncio.new_event_loop()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(call)

    def copy(self, record: CollectionRecord, copy: CollectionRecord, ids: Sequence[str]
             ) -> list[tuple[str, bytes | None]]:
        """Every kind kept of `ids`; returns their copy signals."""
        signals: list[tuple[str, bytes | None]] = []
        for kind in IMAGE_KINDS:
            found = self._run(self._source.get(record.key, kind, ids))
            if found:
                self._run(self._target.put(copy.key, kind, list(found.items())))
            if kind == COPY_KIND:
                signals = [(i, data[32:] or None) for i, data in found.items()]
        return signals

    def forget(self, copy: CollectionRecord) -> None:
        """Deletes what the target store keeps of a deleted copy."""
        self._run(self._target.delete_collection(copy.key))

    def check(self) -> None:
        """Raises ImageStoreUnavailable unless both stores answer."""
        for store in (self._source, self._target):
            self._run(store.check())

    def close(self) -> None:
        for store in (self._source, self._target):
            self._run(store.close())
        self._loop.close()


def copy_collection(source: MilvusStore, target: MilvusStore, record: CollectionRecord,
                    report: Callable[[str], None], images: ImageCopier | None = None) -> int:
    copy = target.create_collection(record.name, record.model, record.description)
    copied, after = 0, ""
    while page := source.list_images(record, PAGE, after, with_vectors=True):
        ids = [image.external_id for image in page]
        # The records before the vectors, the index rows after them, as the service writes.
        signals = images.copy(record, copy, ids) if images is not None else []
        target.upsert(copy, ids, np.stack([_vector(image) for image in page]),
                      [image.metadata for image in page])
        hashed, index_vectors, _ = copy_index.rows(signals)
        if index_vectors is not None:
            target.upsert(copy_index.of(copy), hashed, index_vectors, [{}] * len(hashed))
        copied += len(page)
        after = page[-1].external_id
        report(f"{record.name}: {copied} images")
    if (stored := target.count(copy)) != copied:
        raise RuntimeError(f"{record.name}: copied {copied} images but the target holds "
                           f"{stored}; run again with --replace-partial")
    return copied


def _vector(image: StoredImage) -> np.ndarray:
    assert image.vector is not None  # listed with_vectors=True
    return image.vector


def copy_all(source: MilvusStore, target: MilvusStore, skip_existing: bool,
             replace_partial: bool, report: Callable[[str], None],
             images: ImageCopier | None = None) -> dict[str, int]:
    """Copies every collection of `source` into `target`; returns images copied by name."""
    done: dict[str, int] = {}
    for record in collections(source):
        try:
            existing = target.get_collection(record.name)
        except CollectionNotFound:
            existing = None
        if existing is not None:
            held, wanted = target.count(existing), source.count(record)
            if replace_partial and held != wanted:
                report(f"{record.name}: the target holds {held} of {wanted} images; deleting "
                       "its copy (with anything added there since) to copy it again")
                target.delete_collection(record.name)
                if images is not None:
                    images.forget(existing)
            elif skip_existing or replace_partial:
                report(f"{record.name}: already in the target ({held} of {wanted} images), "
                       "skipped")
                continue
            else:
                raise SystemExit(f"collection {record.name!r} already exists in the target; "
                                 "pass --skip-existing or --replace-partial")
        done[record.name] = copy_collection(source, target, record, report, images)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="source Milvus URI or file")
    parser.add_argument("--to", dest="target", required=True, help="target Milvus URI or file")
    parser.add_argument("--token", default="", help="the target's token (user:password)")
    parser.add_argument("--source-token", default="")
    parser.add_argument("--skip-existing", action="store_true")
    parser.add_argument("--replace-partial", action="store_true")
    parser.add_argument("--images-from", help="the source's image store (folder or s3://); "
                        "default: the folder beside a Lite source, where there is one")
    parser.add_argument("--images-to", help="the target's image store (folder or s3://); "
                        "default: the folder beside a Lite target")
    parser.add_argument("--images-endpoint", help="the object store's URL for s3:// stores "
                        "(or AWS_ENDPOINT_URL)")
    args = parser.parse_args(argv)
    images = _image_copier(args)
    source = open_store(args.source, token=args.source_token)
    try:
        target = open_store(args.target, token=args.token)
        try:
            done = copy_all(source, target, args.skip_existing, args.replace_partial,
                            lambda line: print(line, file=sys.stderr, flush=True), images)
        finally:
            target.close()
    finally:
        source.close()
        if images is not None:
            images.close()
    for name, count in done.items():
        print(f"copied {name}: {count} images")
    return 0


def _image_copier(args: argparse.Namespace) -> ImageCopier | None:
    """The stores to carry copy signals between, checked before anything is copied: a typo
    must not end in a copy that looks complete and has lost copy detection."""
    beside = Path(args.source + ".images") if is_lite(args.source) else None
    source = args.images_from or (beside if beside is not None and beside.is_dir() else None)
    target = args.images_to or (Path(args.target + ".images") if is_lite(args.target) else None)
    if source is None:
        if args.images_to:
            raise SystemExit("--images-to, but the source has no image store: pass "
                             "--images-from (its SEARCH_IMAGE_STORE)")
        return None
    if target is None:
        raise SystemExit(f"the source keeps copy signals ({source}), which copy detection needs: "
                         "pass --images-to (a folder or s3://bucket/prefix), the target "
                         "service's SEARCH_IMAGE_STORE")
    source_at, target_at = _location(source), _location(target)
    if isinstance(source_at, Path) and not source_at.is_dir():
        raise SystemExit(f"--images-from {source_at}: no such folder")
    copier = ImageCopier(_opened(source_at, args.images_endpoint),
                         _opened(target_at, args.images_endpoint))
    try:
        copier.check()
    except ImageStoreUnavailable as err:
        copier.close()
        raise SystemExit(f"image store: {err}") from None
    return copier


def _location(place: Path | str) -> Path | str:
    """A folder, or an s3:// URI that names a bucket (as SEARCH_IMAGE_STORE takes it)."""
    if isinstance(place, Path):
        return place
    if re.match(r"(?i)s3:|s3//", place):
        if not S3_URI.fullmatch(place):
            raise SystemExit(f"{place!r} is not s3://bucket[/prefix] (a lower-case bucket name "
                             "of 3-63 letters, digits, dots and hyphens)")
        return place
    return Path(place)


def _opened(location: Path | str, endpoint: str | None) -> ImageStore:
    store = open_image_store(location, endpoint)
    assert store is not None
    return store


if __name__ == "__main__":
    sys.exit(main())
