"""The `imagesearch` command line: index folders, search, find duplicates, classify.

    imagesearch index photos/ --collection trips --create [--sync]
    imagesearch search "a dog catching a frisbee" -c trips
    imagesearch search --image query.jpg -c trips --json
    imagesearch search "a beach" --minus "at night" --like b12.jpg -c trips
    imagesearch search "a beach" --relevant b12.jpg --irrelevant n7.jpg -c trips
    imagesearch duplicates -c trips                  (groups across the whole collection)
    imagesearch duplicates -c trips --image new.jpg  (is this one already there?)
    imagesearch classify unknown/*.jpg -c pets --label-key label
    imagesearch class-names add cat dog -c pets; imagesearch classify x.jpg --by names -c pets
    imagesearch thumbnails -c trips beach.jpg --out thumbs/   (the kept JPEGs, as files)
    imagesearch models; imagesearch evaluate -c pets    (which served model suits a collection)
    imagesearch migrate start -c pets --to other-model --wait   (no downtime; see migrate -h)
    imagesearch --server 127.0.0.1:50051 health      (either service; exit 0 when SERVING)

The server address comes from --server or IMAGESEARCH_SERVER (default 127.0.0.1:50052).
Tables go to stdout, progress to stderr; --json prints machine-readable output instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch import cli_adaptation, cli_classes, cli_feedback, cli_models, cli_query
from imagesearch.cli_index import CommandError, cmd_index, id_path, path_id
from imagesearch.cli_output import emit, hits_out
from imagesearch.client import IngestIncomplete, Part, SearchClient
from imagesearch.metadata import from_value

__all__ = ["id_path", "main", "parser", "path_id"]

def cmd_search(args: argparse.Namespace, client: SearchClient) -> int:
    given, parts = cli_query.main_part(args), cli_query.parts(args)
    if given is None and not parts:
        raise SystemExit("give a text query, --image FILE, --id ID, or parts (--plus, --minus, "
                         "--like, --unlike, --part)")
    if given is not None and (parts or given.weight != 1.0):
        parts, given = [given, *parts], None
    single = given or Part()
    hits_out(args, client.search(
        args.collection, text=single.text, image=single.image, image_id=single.image_id,
        parts=parts, feedback=cli_query.feedback(args), top_k=args.top_k,
        filters=args.filter, min_similarity=args.min_similarity,
        cutoff_gap=args.cutoff == "gap", cutoff_zscore=args.cutoff == "zscore",
        language=single.language,
        skip_adaptation=args.no_adaptation))
    return 0


def cmd_duplicates(args: argparse.Namespace, client: SearchClient) -> int:
    if args.image or args.id:
        image = args.image.read_bytes() if args.image else None
        hits_out(args, client.find_duplicates(args.collection, image=image, image_id=args.id,
                                              min_similarity=args.threshold,
                                              similar=args.similar))
        return 0
    groups = client.duplicate_groups(args.collection, args.threshold, similar=args.similar)
    emit(args, [{"ids": ids, "min_similarity": round(s, 6)} for ids, s in groups],
         [(n, len(ids), f"{s:.3f}", " ".join(ids)) for n, (ids, s) in enumerate(groups, 1)],
         ["group", "size", "min similarity", "ids"])
    return 0


def cmd_classify(args: argparse.Namespace, client: SearchClient) -> int:
    results = client.classify(args.collection, [f.read_bytes() for f in args.files],
                              args.label_key, args.k, source=args.by,
                              names_weight=args.names_weight)
    emit(args, [{"file": str(f), "labels": [{"label": lab, "confidence": round(c, 6),
                                             "votes": v} for lab, c, v in labels]}
                for f, labels in zip(args.files, results, strict=True)],
         [(f, labels[0][0] if labels else "-", f"{labels[0][1]:.3f}" if labels else "-")
          for f, labels in zip(args.files, results, strict=True)],
         ["file", "label", "confidence"])
    unlabelled = [str(f) for f, labels in zip(args.files, results, strict=True) if not labels]
    if unlabelled:
        print(f"no label for {', '.join(unlabelled)}: none of the nearest {args.k} images in "
              f"'{args.collection}' has metadata '{args.label_key}'", file=sys.stderr)
        return 1
    return 0


def cmd_collections(args: argparse.Namespace, client: SearchClient) -> int:
    found = client.list_collections()
    emit(args, [{"name": c.name, "images": c.image_count, "model": c.model.name,
                 "dimension": c.model.dimension} for c in found],
         [(c.name, c.image_count, c.model.name, c.model.dimension) for c in found],
         ["collection", "images", "model", "dimension"])
    return 0


def cmd_images(args: argparse.Namespace, client: SearchClient) -> int:
    found = [(image.id, {k: from_value(v) for k, v in image.metadata.items()})
             for image in client.list_images(args.collection)]
    emit(args, [{"id": image_id, "metadata": metadata} for image_id, metadata in found],
         [(image_id, json.dumps(metadata) if metadata else "") for image_id, metadata in found],
         ["id", "metadata"])
    return 0


def thumbnail_name(image_id: str) -> str:
    """<id, percent-encoded>.jpg (all but letters, digits and '_.-~' encoded, so no id names
    another folder); a long id is cut and keeps a digest, as file names stop at 255 bytes."""
    name = quote(image_id, safe="")
    if len(name) > 200:
        digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"{name[:180]}-{digest}"
    return f"{name}.jpg"


def thumbnail_names(ids: Sequence[str]) -> dict[str, str]:
    """Each id's file name; where two differ only in case ('Beach.png', 'beach.png'), which
    macOS's and Windows' file systems do not tell apart, the later one keeps a digest too."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for image_id in dict.fromkeys(ids):
        name = thumbnail_name(image_id)
        if name.casefold() in taken:
            digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            name = f"{name[:-len('.jpg')][:180]}-{digest}.jpg"
        taken.add(name.casefold())
        names[image_id] = name
    return names


def cmd_thumbnails(args: argparse.Namespace, client: SearchClient) -> int:
    found, missing = client.thumbnails(args.collection, args.ids)
    args.out.mkdir(parents=True, exist_ok=True)
    names = thumbnail_names(args.ids)
    written = []
    for image_id in args.ids:
        if image_id in found:
            path = args.out / names[image_id]
            path.write_bytes(found[image_id])
            written.append((image_id, str(path)))
    emit(args, {"written": [{"id": i, "file": f} for i, f in written], "missing": missing},
         written, ["id", "file"])
    if missing:
        print(f"no thumbnail of {len(missing)} ids (not in '{args.collection}', or added "
              f"before thumbnails were kept): {', '.join(missing[:10])}", file=sys.stderr)
        return 1
    return 0


def cmd_delete(args: argparse.Namespace, client: SearchClient) -> int:
    client.delete_images(args.collection, args.ids)
    print(f"deleted {len(args.ids)} ids from '{args.collection}' (ids that were not there "
          "are ignored)", file=sys.stderr)
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
            details = err.details() or (
                f"{args.server} has no service named {args.service!r} (ask for '' or "
                "'liveness', or a service's full name)" if err.code() == grpc.StatusCode.NOT_FOUND
                else "")
            if args.json:
                print(json.dumps({"status": err.code().name, "message": details}))
            print(f"unhealthy: {err.code().name}: {details}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(json.dumps({"status": status}) if args.json else status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def add_common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before or after its name. Only the top level sets
    defaults: a subcommand's copy (SUPPRESS) must not overwrite a value given before it."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS
    parser.add_argument("--server", default=default(os.environ.get("IMAGESEARCH_SERVER",
                                                                   "127.0.0.1:50052")),
                        help="the search service (default: $IMAGESEARCH_SERVER or "
                        "127.0.0.1:50052)")
    parser.add_argument("--timeout", type=float, default=default(120.0),
                        help="seconds per call")
    parser.add_argument("--token", default=default(os.environ.get("IMAGESEARCH_TOKEN")),
                        help="bearer token (default: $IMAGESEARCH_TOKEN)")
    parser.add_argument("--ca-file", type=Path,
                        default=default(os.environ.get("IMAGESEARCH_CA_FILE")),
                        help="CA (PEM) to verify a TLS server (default: $IMAGESEARCH_CA_FILE)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable output")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="imagesearch", description=__doc__.splitlines()[0])
    add_common(top, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    add_common(common, defaults=False)
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=summary)
    index = command("index", "add every image under a folder")
    index.add_argument("path", type=Path)
    index.add_argument("-c", "--collection", required=True)
    index.add_argument("--create", action="store_true", help="create the collection if needed")
    index.add_argument("--model", default="",
                       help="--create: the served model to build it with (default: the "
                       "embedder's default; see `imagesearch models`)")
    index.add_argument("--label-from-folder", action="store_true",
                       help="store each image's folder name as metadata 'label'")
    index.add_argument("--progress", action="store_true", help="progress bar even when piped")
    index.add_argument("--sync", action="store_true",
                       help="also delete images indexed from this folder whose files are gone")
    index.set_defaults(run=cmd_index)
    search = command("search", "search by text, an image file, an indexed image, or a "
                     "weighted sum of them")
    search.add_argument("text", nargs="?")
    search.add_argument("--image", type=Path)
    search.add_argument("--id", help="an indexed image's id")
    search.add_argument("-c", "--collection", required=True)
    search.add_argument("-k", "--top-k", type=int, default=10)
    search.add_argument("--filter", action="append", default=[],
                        help="KEY=VALUE, or != < <= > >= (repeatable); = and != on a number "
                        "or true/false also match it stored as text")
    search.add_argument("--min-similarity", type=float)
    search.add_argument("--cutoff", choices=["none", "gap", "zscore"], default="none",
                        help="gap: only the hits before the largest drop in similarity; "
                        "zscore: those 1.5 standard deviations above the mean "
                        "(set -k to the most you would want)")
    search.add_argument("--no-adaptation", action="store_true",
                        help="the text as embedded, not through the collection's learned "
                        "adaptation (imagesearch adaptation)")
    cli_query.add_options(search)
    search.set_defaults(run=cmd_search)
    dups = command("duplicates", "near-duplicate groups, or copies of one image")
    dups.add_argument("-c", "--collection", required=True)
    dups.add_argument("--image", type=Path)
    dups.add_argument("--id")
    dups.add_argument("--similar", action="store_true",
                      help="look-alikes by embedding similarity, not verified copies")
    dups.add_argument("--threshold", type=float, default=0.0,
                      help="--similar: the similarity (0: 0.95); copies: only candidates above")
    dups.set_defaults(run=cmd_duplicates)
    classify = command("classify", "label images by their nearest neighbours or class names")
    classify.add_argument("files", type=Path, nargs="+")
    classify.add_argument("-c", "--collection", required=True)
    classify.add_argument("--label-key", default="label")
    classify.add_argument("-k", type=int, default=10)
    cli_classes.add_classify_options(classify)
    classify.set_defaults(run=cmd_classify)
    cli_classes.add_command(command)
    cli_feedback.add_command(command)
    cli_models.add_commands(command)
    cli_adaptation.add_command(command)
    command("collections", "list collections").set_defaults(run=cmd_collections)
    images = command("images", "list a collection's images")
    images.add_argument("-c", "--collection", required=True)
    images.set_defaults(run=cmd_images)
    thumbs = command("thumbnails", "write the thumbnails the service keeps of images")
    thumbs.add_argument("ids", nargs="+")
    thumbs.add_argument("-c", "--collection", required=True)
    thumbs.add_argument("--out", type=Path, default=Path("."),
                        help="folder for the <id>.jpg files (ids percent-encoded)")
    thumbs.set_defaults(run=cmd_thumbnails)
    delete = command("delete", "delete images by id")
    delete.add_argument("ids", nargs="+")
    delete.add_argument("-c", "--collection", required=True)
    delete.set_defaults(run=cmd_delete)
    health = command("health", "is the server (search or embedder) serving?")
    health.add_argument("--service", default="",
                        help="'' (ready), a service's full name, or 'liveness'")
    health.set_defaults(run=None)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "health":
            return cmd_health(args)
        with SearchClient(args.server, args.timeout, ca_file=args.ca_file,
                          token=args.token) as client:
            code: int = args.run(args, client)
            return code
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {explain(err, args.server)}", file=sys.stderr)
        return 2
    except (ValueError, OSError, IngestIncomplete, CommandError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def explain(err: grpc.RpcError, server: str) -> str:
    """gRPC's own words, and what to do where they name nothing the user set."""
    code, details = err.code(), err.details() or ""
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return (f"{server} does not serve the search API (is it the embedder's port? the "
                "search service listens on 50052 by default; set --server or "
                "IMAGESEARCH_SERVER)")
    unreachable = ("failed to connect", "backends failing", "connection refused")
    if code == grpc.StatusCode.UNAVAILABLE and any(s in details.lower() for s in unreachable):
        return (f"cannot reach the search service at {server}: is it running? (set --server "
                f"or IMAGESEARCH_SERVER) [{details}]")
    return details


if __name__ == "__main__":
    sys.exit(main())
