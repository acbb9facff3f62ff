"""`imagesearch feedback`: relevance judgements a collection keeps as data.

    imagesearch feedback record "a beach" --relevant b12.jpg --irrelevant n7.jpg -c trips
    imagesearch feedback record --id b12.jpg --relevant b13.jpg -c trips
    imagesearch feedback list -c trips --json --vectors > feedback.json   (an export)
    imagesearch feedback delete --image b12.jpg -c trips     (or --id FEEDBACK_ID, or --all)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from imagesearch.cli_output import emit
from imagesearch.client import SearchClient
from imagesearch.queries import query


def add_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    feedback = command("feedback", "relevance judgements a collection keeps")
    feedback.add_argument("action", choices=["record", "list", "delete"])
    feedback.add_argument("text", nargs="?", help="record: the text query judged")
    feedback.add_argument("-c", "--collection", required=True)
    feedback.add_argument("--image", type=Path, help="record: an image file as the query")
    feedback.add_argument("--query-id", help="record: an indexed image as the query")
    for flag, what in (("--relevant", "record: an image judged relevant"),
                       ("--irrelevant", "record: an image judged not relevant"),
                       ("--id", "delete: a feedback id"),
                       ("--image-id", "delete: every judgement of this image")):
        feedback.add_argument(flag, action="append", default=[], metavar="ID",
                              help=f"{what} (repeatable)")
    feedback.add_argument("--all", action="store_true", help="delete: every judgement")
    feedback.add_argument("--vectors", action="store_true", help="list: the query vectors too")
    feedback.set_defaults(run=cmd_feedback)


def cmd_feedback(args: argparse.Namespace, client: SearchClient) -> int:
    if args.action == "list":
        kept = list(client.list_feedback(args.collection, args.vectors))
        emit(args, [MessageToDict(r, preserving_proto_field_name=True) for r in kept],
             [(r.image_id, "yes" if r.relevant else "no", r.query_kind, r.query_description,
               r.id) for r in kept], ["image", "relevant", "query", "description", "id"])
    elif args.action == "delete":
        if (bool(args.id) + bool(args.image_id) + args.all) != 1:
            raise SystemExit("give --id, --image-id or --all (one of them)")
        client.delete_feedback(args.collection, ids=args.id, image_ids=args.image_id,
                               everything=args.all)
    else:
        image = args.image.read_bytes() if args.image else None
        ids, held = client.record_feedback(
            args.collection, query(text=args.text, image=image, image_id=args.query_id),
            args.relevant, args.irrelevant)
        emit(args, {"feedback_ids": ids, "feedback_count": held}, [(held,)],
             ["judgements kept"])
    return 0
