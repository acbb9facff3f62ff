"""Per-step variety for the small model's training batches (issue 16).

A fixed pool of rendered scenes is seen ~30 times in a run; the model then learns those
drawings. Two cheap ways to show it new ones each step without rendering every image afresh:

- `dihedral`: one of the 8 flips/quarter turns of each image, with its Scene's position moved
  the same way, so captions naming the position stay true. Shapes keep their names under all
  of them (an upside-down triangle is still a triangle).
- refresh (`small_model.Data.refresh`): a few pool slots re-drawn with new scenes every step,
  16 a step showing ~70k new scenes in a run; embedder_service.export.scene_stream draws them
  in a process beside the step (~2-3.5 ms a scene, a step ~130 ms).
"""

from __future__ import annotations

import dataclasses
import random

import torch

from imagesearch import synthetic
from imagesearch.synthetic import Scene

# Where each position word goes under a horizontal flip, a vertical flip and a transpose.
_HFLIP = {"left": "right", "right": "left"}
_VFLIP = {"top": "bottom", "bottom": "top"}
_TRANSPOSE = {"left": "top", "top": "left", "right": "bottom", "bottom": "right"}


def dihedral(pixels: torch.Tensor, scenes: list[Scene], rng: random.Random
             ) -> tuple[torch.Tensor, list[Scene]]:
    """Each [3, H, W] image flipped/turned at random; the scenes' positions follow."""
    out_pixels, out_scenes = [], []
    for image, scene in zip(pixels, scenes, strict=True):
        position = scene.position
        if rng.random() < 0.5:
            image, position = image.transpose(1, 2), _TRANSPOSE.get(position, position)
        if rng.random() < 0.5:
            image, position = image.flip(2), _HFLIP.get(position, position)
        if rng.random() < 0.5:
            image, position = image.flip(1), _VFLIP.get(position, position)
        out_pixels.append(image)
        out_scenes.append(dataclasses.replace(scene, position=position))
    return torch.stack(out_pixels), out_scenes


def caption_targets(scenes: list[Scene], texts: list[str]) -> torch.Tensor:
    """[image, caption] positives where the caption is true of the image: soft_targets also
    pairs "a red circle on the left" with a red circle on the right, which teaches the model
    to ignore position, size and background words; this does not."""
    claims = [_claims(text) for text in texts]  # each text and scene read once, not per pair
    true = [[_true_of(facts, said) for said in claims] for facts in map(_facts, scenes)]
    return torch.tensor(true, dtype=torch.float32)


_ATTRIBUTE_WORDS = {*synthetic.SIZES, *synthetic.POSITIONS, *synthetic.BACKGROUNDS}


def _claims(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """A caption's words, and those of them naming a size, position or background."""
    words = frozenset(text.split())
    return words, words & _ATTRIBUTE_WORDS


def _facts(scene: Scene) -> tuple[str, str, frozenset[str], frozenset[str]]:
    """What a true caption of the scene must say: its colour, its noun, one of its count
    words; and the only size, position and background words it may say."""
    noun = scene.shape if scene.count == 1 else synthetic.plural(scene.shape)
    counts = ({"a", "an", "one"} if scene.count == 1
              else {str(scene.count), ("two", "three")[scene.count - 2]})
    return (scene.colour, noun, frozenset(counts),
            frozenset((scene.size, scene.position, scene.background)))


def _true_of(facts: tuple[str, str, frozenset[str], frozenset[str]],
             said: tuple[frozenset[str], frozenset[str]]) -> bool:
    colour, noun, counts, attributes = facts
    words, named = said
    return colour in words and noun in words and not counts.isdisjoint(words) and (
        named <= attributes)
