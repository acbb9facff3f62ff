"""The small model's architectures and the defaults each trains with (embedder_service.export.
small_model): `small` is the bundled primary model, `wide` a second model in another space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONTEXT_LENGTH = 32


@dataclass(frozen=True)
class ModelVariant:
    """One trainable architecture and the defaults it trains with."""

    model_name: str  # also the bundle's folder under embedder_service/bundles
    image_size: int
    embed_dim: int
    vision: dict[str, Any]  # ModifiedResNet takes a tuple of layers
    text: dict[str, int]
    steps: int
    scenes: int
    seed: int
    min_accuracy: float  # with varied > 0, of the lower of the plain and varied held-out sets
    # How it trains by default (flags of the same names override them); see Schedule.
    varied: float = 0.0
    plain_first: float = 0.0
    caption_targets: bool = False
    dihedral: bool = False
    refresh: int = 0
    aux_weight: float = 0.0
    lr: float = 1.5e-3
    low_res_first: float = 0.0

    def model_cfg(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim,
                "vision_cfg": {"image_size": self.image_size, **self.vision},
                "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 49408,
                             **self.text}}


VARIANTS = {
    # A convolutional image tower (open_clip's ModifiedResNet, one bottleneck block per stage,
    # attention pooling) trained on plain and varied drawings: the ViT on 8x8 patches learnt
    # imagesearch.synthetic's drawing style, not shapes; convolutions see edges and corners
    # wherever they are, and transfer to renderers never seen (issue 16, bench/RESULTS.md:
    # 0.90-0.93 R@1 on bench.shifted_render against the ViT's 0.42-0.59). ~0.12 s a step on two
    # cores (~10 min in all; 0.2 s in fp32), 21 MB of fp32 + int8 bundle. Its held-out floor
    # is on the lower of the plain and varied sets (one gallery of 48 each): 0.81 when it was
    # chosen. Seed 1: of the two seeds trained with copies in varied layouts (bench/RESULTS.md,
    # third experiment), the one with the better validation R@1; seed 0 is within the seeds'
    # spread.
    "small": ModelVariant(
        "synthetic-clip-small", image_size=64, embed_dim=64,
        vision={"layers": (1, 1, 1, 1), "width": 16, "head_width": 32},
        text={"width": 48, "heads": 4, "layers": 3},
        steps=4500, scenes=20000, seed=1, min_accuracy=0.75, varied=0.6, plain_first=0.3,
        caption_targets=True, dihedral=True, refresh=16),
    # How the bundled synthetic-clip-small was trained before issue 16 (ViT, plain scenes
    # only): ~0.975 on its own renderer, 0.42 on another.
    "small-vit": ModelVariant(
        "synthetic-clip-small", image_size=64, embed_dim=64,
        vision={"layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
        text={"width": 48, "heads": 4, "layers": 3},
        steps=4000, scenes=20000, seed=0, min_accuracy=0.9),
    # A different space: wider embedding and image tower on a smaller input, a narrower and
    # shallower text tower (the 49408-token table dominates the bundle's size, so a narrow text
    # width keeps it small), fewer scenes and another seed. Its steps are cheaper than the
    # small model's (~0.06 s on two idle cores in bf16: ~4.5 min). The committed bundle had
    # 2500 fp32 steps (0.958 held-out); the bf16 trainer's other draw of the same seed reached
    # 0.854 there (0.833 in fp32), under the floor; 4000 steps reach 0.938 (bench/RESULTS.md).
    "wide": ModelVariant(
        "synthetic-clip-wide", image_size=48, embed_dim=96,
        vision={"layers": 3, "width": 96, "patch_size": 8, "head_width": 32},
        text={"width": 32, "heads": 4, "layers": 2},
        steps=4000, scenes=12000, seed=1, min_accuracy=0.9),
}
