"""`imagesearch models`, `evaluate` and `migrate`: the served models, which suits a collection,
and moving a collection to another one without downtime.

    imagesearch models
    imagesearch evaluate -c shapes --label-key label           (every served model, best first)
    imagesearch migrate start -c shapes --to synthetic-clip-alt --wait
    imagesearch migrate status -c shapes
    imagesearch migrate pause|resume|cancel|rollback|finish -c shapes
    imagesearch migrate switch -c shapes [--force]             (after start --no-switch)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from google.protobuf.json_format import MessageToDict

from imagesearch.cli_output import emit
from imagesearch.client import SearchClient
from imagesearch.client_models import CONTROLS
from imagesearch.search.v1 import search_pb2 as pb


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    command("models", "the models the embedder serves").set_defaults(run=cmd_models)
    evaluate = command("evaluate", "rank the served models on a collection's labelled images")
    evaluate.add_argument("-c", "--collection", required=True)
    evaluate.add_argument("--label-key", default="label")
    evaluate.add_argument("--model", action="append", default=[],
                          help="a model to evaluate (repeatable; default: every served one)")
    evaluate.add_argument("--max-images", type=int, default=0,
                          help="labelled images to evaluate on (default 1000, at most 5000)")
    evaluate.set_defaults(run=cmd_evaluate)
    migrate = command("migrate", "move a collection to another model without downtime")
    migrate.add_argument("action", choices=["start", "status", *CONTROLS])
    migrate.add_argument("-c", "--collection", required=True)
    migrate.add_argument("--to", metavar="MODEL", help="start: the model's name or fingerprint")
    migrate.add_argument("--no-switch", action="store_true",
                         help="start: wait for `migrate switch` once copied")
    migrate.add_argument("--grace", type=int, metavar="SECONDS",
                         help="start: keep the old vectors this long after the switch "
                         "(default one day)")
    migrate.add_argument("--force", action="store_true",
                         help="start, switch: switch although some images could not be copied")
    migrate.add_argument("--wait", action="store_true",
                         help="start, resume: return once the migration rests")
    migrate.set_defaults(run=cmd_migrate)


def cmd_models(args: argparse.Namespace, client: SearchClient) -> int:
    models = client.list_models()
    emit(args, [MessageToDict(m, preserving_proto_field_name=True) for m in models],
         [(m.model.name, m.model.fingerprint[:19] + "...", m.model.dimension, m.image_size,
           "yes" if m.is_default else "", "yes" if m.ready else "no",
           " ".join(m.languages)) for m in models],
         ["model", "fingerprint", "dimension", "image size", "default", "ready", "languages"])
    return 0


def cmd_evaluate(args: argparse.Namespace, client: SearchClient) -> int:
    report = client.evaluate_models(args.collection, args.label_key, args.model,
                                    args.max_images)
    emit(args, MessageToDict(report, preserving_proto_field_name=True),
         [(e.model.name + (" (current)" if e.is_current else ""), e.images,
           f"{e.recall_at_1:.3f}", f"{e.recall_at_10:.3f}", f"{e.knn_accuracy:.3f}",
           f"{e.zero_shot_accuracy:.3f}") for e in report.evaluations],
         ["model", "images", "R@1", "R@10", "k-NN", "zero-shot"])
    return 0


def cmd_migrate(args: argparse.Namespace, client: SearchClient) -> int:
    if args.action == "start":
        if not args.to:
            raise SystemExit("migrate start needs --to MODEL (see `imagesearch models`)")
        migration = client.start_migration(args.collection, args.to,
                                           switch_when_copied=not args.no_switch,
                                           grace_period_s=args.grace, force=args.force)
    elif args.action == "status":
        migration = client.get_migration(args.collection)
    else:
        migration = client.control_migration(args.collection, args.action, args.force)
    if args.wait and args.action in ("start", "resume"):
        migration = client.wait_for_migration(args.collection)
    state = pb.Migration.State.Name(migration.state).removeprefix("STATE_").lower()
    emit(args, MessageToDict(migration, preserving_proto_field_name=True),
         [(migration.collection, state, migration.source.name, migration.target.name,
           f"{migration.images_copied}/{migration.images_total}", migration.images_skipped,
           migration.error)],
         ["collection", "state", "from", "to", "copied", "skipped", "error"])
    return 0
