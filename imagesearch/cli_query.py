"""`imagesearch search`'s compound queries and relevance feedback, as options:

    imagesearch search "a beach" --minus "at night" -c trips
    imagesearch search "a beach" --like b12.jpg --part -0.5 text "people" -c trips
    imagesearch search --id b12.jpg --plus red -c trips        (like this image, but red)
    imagesearch search "a beach" --relevant b12.jpg --irrelevant n7.jpg -c trips

The query is the weighted sum of its parts (the text, --image or --id given: weight --weight,
default 1), each L2-normalised; feedback then refines it (Rocchio). Structured options only:
no expression to parse.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from imagesearch.queries import Feedback, Part

_PART_KINDS = ("text", "image", "id")


def add_options(search: argparse.ArgumentParser) -> None:
    search.add_argument("--language", default="", metavar="TAG",
                        help="the language of the query's texts (BCP 47: de, zh, ar, ...; "
                             "'auto' detects non-Latin scripts), which picks the model's "
                             "text tower")
    parts = search.add_argument_group("compound query (a weighted sum of parts)")
    parts.add_argument("--weight", type=float, default=1.0,
                       help="weight of the text, --image or --id given (default 1)")
    for flag, what in (("--plus", "a text part of weight 1"),
                       ("--minus", "a text part of weight -1 (away from it)"),
                       ("--like", "an indexed image's id, weight 1"),
                       ("--unlike", "an indexed image's id, weight -1")):
        parts.add_argument(flag, action="append", default=[], metavar="TEXT" if flag in (
            "--plus", "--minus") else "ID", help=f"{what} (repeatable)")
    parts.add_argument("--part", nargs=3, action="append", default=[],
                       metavar=("WEIGHT", "KIND", "VALUE"),
                       help="any part: KIND text, image (a file) or id, WEIGHT non-zero in "
                       "[-100, 100] (repeatable)")
    feedback = search.add_argument_group("relevance feedback (refines the query at once)")
    feedback.add_argument("--relevant", action="append", default=[], metavar="ID",
                          help="an indexed image judged relevant (repeatable)")
    feedback.add_argument("--irrelevant", action="append", default=[], metavar="ID",
                          help="an indexed image judged not relevant (repeatable); left out of "
                          "the results unless --keep-irrelevant")
    feedback.add_argument("--feedback-weights", nargs=3, type=float,
                          metavar=("QUERY", "RELEVANT", "IRRELEVANT"),
                          help="Rocchio's weights, each in [0, 10] (default 1 0.75 0.15)")
    feedback.add_argument("--exclude-relevant", action="store_true",
                          help="leave the relevant examples out of the results")
    feedback.add_argument("--keep-irrelevant", action="store_true",
                          help="keep the irrelevant examples in the results")


def parts(args: argparse.Namespace) -> list[Part]:
    """The parts the options name, beyond the main text, --image or --id."""
    language = args.language
    made = [Part(text=t, language=language) for t in args.plus]
    made += [Part(text=t, weight=-1.0, language=language) for t in args.minus]
    made += [Part(image_id=i) for i in args.like]
    made += [Part(image_id=i, weight=-1.0) for i in args.unlike]
    return made + [with_language(_part(*given), language) for given in args.part]


def _part(weight: str, kind: str, value: str) -> Part:
    try:
        number = float(weight)
    except ValueError:
        raise ValueError(f"--part {weight} {kind} ...: the weight must be a number") from None
    if kind not in _PART_KINDS:
        raise ValueError(f"--part {weight} {kind} ...: KIND is one of {', '.join(_PART_KINDS)}")
    if kind == "image":
        return Part(image=Path(value).read_bytes(), weight=number)
    return Part(text=value, weight=number) if kind == "text" else Part(image_id=value,
                                                                        weight=number)


def with_language(part: Part, language: str) -> Part:
    return replace(part, language=language) if part.text is not None else part


def main_part(args: argparse.Namespace) -> Part | None:
    """The text, --image or --id given, with --weight (None: none given)."""
    given = [v is not None for v in (args.text, args.image, args.id)]
    if sum(given) > 1:
        raise SystemExit("give at most one of a text query, --image FILE and --id ID")
    if args.text is not None:
        return Part(text=args.text, weight=args.weight, language=args.language)
    if args.image is not None:
        return Part(image=args.image.read_bytes(), weight=args.weight)
    return Part(image_id=args.id, weight=args.weight) if args.id is not None else None


def feedback(args: argparse.Namespace) -> Feedback | None:
    if not (args.relevant or args.irrelevant or args.feedback_weights):
        return None
    query, relevant, irrelevant = args.feedback_weights or (None, None, None)
    return Feedback(args.relevant, args.irrelevant, query, relevant, irrelevant,
                    exclude_positives=args.exclude_relevant,
                    include_negatives=args.keep_irrelevant)
