"""Copy every collection from one Milvus to another: vectors and metadata, nothing embedded again.

    python -m search_service.copy_store --from data/imagesearch.db --to http://milvus:19530

For the move from the embedded default (a Milvus Lite file) to a Milvus server when a
collection outgrows Lite (README, "Where Lite stops"), or back. Stop the search service that
uses the source first (a Lite file opens in one process only); then point SEARCH_MILVUS_URI
at the target. Collections that already exist in the target are refused unless --skip-existing;
a copy that stops half-way can be run again with --replace-partial, which deletes and copies
again the collections whose image counts differ - with whatever was added to the target's
copy since: use it before the service writes to the target.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from search_service.adapters.milvus.store import MilvusStore
from search_service.adapters.milvus.vector_store import open_store
from search_service.domain import CollectionRecord, StoredImage
from search_service.errors import CollectionNotFound

PAGE = 500


def collections(store: MilvusStore) -> list[CollectionRecord]:
    found: list[CollectionRecord] = []
    while page := store.list_collections(100, found[-1].name if found else ""):
        found += page
    return found


def copy_collection(source: MilvusStore, target: MilvusStore, record: CollectionRecord,
                    report: Callable[[str], None]) -> int:
    copy = target.create_collection(record.name, record.model, record.description)
    copied, after = 0, ""
    while page := source.list_images(record, PAGE, after, with_vectors=True):
        vectors = np.stack([_vector(image) for image in page])
        target.upsert(copy, [image.external_id for image in page], vectors,
                      [image.metadata for image in page])
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
             replace_partial: bool, report: Callable[[str], None]) -> dict[str, int]:
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
            elif skip_existing or replace_partial:
                report(f"{record.name}: already in the target ({held} of {wanted} images), "
                       "skipped")
                continue
            else:
                raise SystemExit(f"collection {record.name!r} already exists in the target; "
                                 "pass --skip-existing or --replace-partial")
        done[record.name] = copy_collection(source, target, record, report)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="source Milvus URI or file")
    parser.add_argument("--to", dest="target", required=True, help="target Milvus URI or file")
    parser.add_argument("--token", default="", help="the target's token (user:password)")
    parser.add_argument("--source-token", default="")
    parser.add_argument("--skip-existing", action="store_true")
    parser.add_argument("--replace-partial", action="store_true")
    args = parser.parse_args(argv)
    source = open_store(args.source, token=args.source_token)
    try:
        target = open_store(args.target, token=args.token)
        try:
            done = copy_all(source, target, args.skip_existing, args.replace_partial,
                            lambda line: print(line, file=sys.stderr, flush=True))
        finally:
            target.close()
    finally:
        source.close()
    for name, count in done.items():
        print(f"copied {name}: {count} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
