"""Chooses between trained small models without looking at the evaluation renderer (issue 16).

    python -m bench.validation_eval --bundle DIR [--seeds 5]

bench.generalisation_eval's figures (caption->image R@1 over 48 colour x shape, and whether
position, size and count words help) on the training renderers only - imagesearch.synthetic
and imagesearch.synthetic_varied with its training photographs - at other seeds (2000 on)
than any training or evaluation gallery. Tuning against bench.shifted_render would make its
figures a measure of the tuning, not of generalisation: this is what runs and settings are
compared with; generalisation_eval is run on the chosen candidate only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
from pathlib import Path

from bench.generalisation_eval import Renderer, main, plain
from embedder_service.settings import BUNDLED_MODEL
from imagesearch import synthetic_varied
from imagesearch.synthetic import Scene

SEED = 2000


def varied(scene: Scene, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    synthetic_varied.render(scene, 96, rng).save(buffer, "PNG")
    return buffer.getvalue()


VALIDATION: dict[str, Renderer] = {"plain": plain, "varied": varied}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--seeds", type=int, default=5, help="galleries per figure")
    args = parser.parse_args()
    asyncio.run(main(args.bundle, [SEED + i for i in range(args.seeds)], VALIDATION,
                     ("plain", "varied")))
