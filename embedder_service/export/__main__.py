"""Command line: export an OpenCLIP model to a bundle the embedder serves.

    imagesearch-export --model ViT-B-32 --pretrained openai --out models/ViT-B-32-openai

Needs the [export] extra and, for pretrained weights, network access to the model hub.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from embedder_service.bundle import Precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagesearch-export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="OpenCLIP architecture name")
    parser.add_argument("--pretrained", default="openai", help="OpenCLIP pretrained tag")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights instead of --pretrained (offline smoke tests)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--precisions", default="fp32,fp16,int8",
                        help="comma-separated variants: fp32 (always), fp16 (GPU), int8 (CPU)")
    args = parser.parse_args(argv)
    precisions = tuple(cast(Precision, p.strip()) for p in args.precisions.split(","))
    if not set(precisions) <= {"fp32", "fp16", "int8"}:
        parser.error(f"unknown precision in {args.precisions!r}")
    try:
        from embedder_service.export.open_clip_export import export_open_clip
    except ModuleNotFoundError as missing:
        print(f"imagesearch-export needs the [export] extra (torch, open_clip): {missing}. "
              "Install it with `make venv-test` in a checkout, or "
              "`pip install 'imagesearch[cpu,export]'`.", file=sys.stderr)
        return 2
    manifest = export_open_clip(args.model, None if args.random_init else args.pretrained,
                                args.out, precisions)
    print(f"wrote {args.out}: {manifest.model_name}, dim {manifest.embedding_dim}, "
          f"variants {sorted(manifest.variants)}, fingerprint {manifest.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
