"""Command line: export an OpenCLIP model to a bundle the embedder serves, or add an M-CLIP
multilingual text tower to an existing bundle.

    imagesearch-export --model ViT-B-32 --pretrained openai --out models/ViT-B-32-openai
    imagesearch-export --add-mclip-tower M-CLIP/XLM-Roberta-Large-Vit-B-32 \\
        --bundle models/ViT-B-32-openai --languages de,fr,es,zh,ja

Needs the [export] extra and, for pretrained weights, network access to the model hub.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from embedder_service.bundle import Precision

MISSING_EXTRA = ("imagesearch-export needs the [export] extra (torch, open_clip, transformers): "
                 "{missing}. Install it with `make venv-test` in a checkout, or "
                 "`pip install 'imagesearch[cpu,export]'`.")


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="imagesearch-export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="OpenCLIP architecture name")
    parser.add_argument("--pretrained", default="openai", help="OpenCLIP pretrained tag")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights instead of --pretrained (offline smoke tests)")
    parser.add_argument("--out", type=Path, help="bundle directory to write")
    parser.add_argument("--precisions", default="fp32,fp16,int8",
                        help="comma-separated variants: fp32 (always), fp16 (GPU), int8 (CPU)")
    mclip = parser.add_argument_group("M-CLIP text tower (instead of --out)")
    mclip.add_argument("--add-mclip-tower", metavar="MODEL",
                       help="Hugging Face model name or local checkpoint directory")
    mclip.add_argument("--bundle", type=Path, help="existing bundle to add the tower to")
    mclip.add_argument("--languages", help="comma-separated BCP 47 tags the tower serves")
    mclip.add_argument("--tower-name", default="mclip", help="the tower's name in the manifest")
    args = parser.parse_args(argv)
    if (args.out is None) == (args.add_mclip_tower is None):
        parser.error("give either --out (export an OpenCLIP model) or --add-mclip-tower")
    if args.add_mclip_tower is not None and (args.bundle is None or not args.languages):
        parser.error("--add-mclip-tower needs --bundle and --languages")
    return parser, args


def export_open_clip_bundle(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    precisions = tuple(cast(Precision, p.strip()) for p in args.precisions.split(","))
    if not set(precisions) <= {"fp32", "fp16", "int8"}:
        parser.error(f"unknown precision in {args.precisions!r}")
    try:
        from embedder_service.export.open_clip_export import export_open_clip
    except ModuleNotFoundError as missing:
        print(MISSING_EXTRA.format(missing=missing), file=sys.stderr)
        return 2
    manifest = export_open_clip(args.model, None if args.random_init else args.pretrained,
                                args.out, precisions)
    print(f"wrote {args.out}: {manifest.model_name}, dim {manifest.embedding_dim}, "
          f"variants {sorted(manifest.variants)}, fingerprint {manifest.fingerprint}")
    return 0


def add_mclip_tower(args: argparse.Namespace) -> int:
    try:
        from embedder_service.export.mclip import export_mclip_tower
    except ModuleNotFoundError as missing:
        print(MISSING_EXTRA.format(missing=missing), file=sys.stderr)
        return 2
    languages = tuple(lang.strip() for lang in args.languages.split(",") if lang.strip())
    try:
        manifest = export_mclip_tower(args.add_mclip_tower, args.bundle, languages,
                                      args.tower_name)
    except ValueError as err:
        print(f"imagesearch-export: {err}", file=sys.stderr)
        return 1
    print(f"added text tower {args.tower_name!r} ({', '.join(languages)}) to {args.bundle}; "
          f"fingerprint unchanged: {manifest.fingerprint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if args.add_mclip_tower is not None:
        return add_mclip_tower(args)
    return export_open_clip_bundle(parser, args)


if __name__ == "__main__":
    sys.exit(main())
