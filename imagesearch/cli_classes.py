"""`imagesearch class-names`: the class names a collection keeps for zero-shot classify.

    imagesearch class-names add "red circle" "blue square" -c shapes
    imagesearch class-names add --file names.txt -c shapes        (one name a line)
    imagesearch class-names list -c shapes
    imagesearch class-names delete "red circle" -c shapes
    imagesearch classify a.png --by names -c shapes               (or --by both)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from imagesearch.cli_output import emit
from imagesearch.client import SearchClient


def add_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    names = command("class-names", "the class names a collection keeps for classify --by names")
    names.add_argument("action", choices=["add", "list", "delete"])
    names.add_argument("names", nargs="*")
    names.add_argument("-c", "--collection", required=True)
    names.add_argument("--file", type=Path, help="more names, one a line (blank lines skipped)")
    names.set_defaults(run=cmd_class_names)


def add_classify_options(classify: argparse.ArgumentParser) -> None:
    classify.add_argument("--by", choices=["labelled", "names", "both"], default="labelled",
                          help="labelled: the nearest images with --label-key; names: the "
                          "collection's class names (zero-shot); both: the two mixed")
    classify.add_argument("--names-weight", type=float,
                          help="--by both: the names' share, 0 to 1 (default 0.5)")


def given_names(args: argparse.Namespace) -> list[str]:
    names = list(args.names)
    if args.file is not None:
        names += [line.strip() for line in args.file.read_text().splitlines() if line.strip()]
    return names


def cmd_class_names(args: argparse.Namespace, client: SearchClient) -> int:
    if args.action == "list":
        listed = list(client.list_class_names(args.collection))
        emit(args, listed, [(name,) for name in listed], ["class name"])
        return 0
    names = given_names(args)
    if not names:
        raise SystemExit("give class names, or --file with one a line")
    if args.action == "delete":
        client.delete_class_names(args.collection, names)
        return 0
    held = client.add_class_names(args.collection, names)
    emit(args, {"class_name_count": held}, [(held,)], ["class names kept"])
    return 0
