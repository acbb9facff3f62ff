"""Per-step variety for the small model's batches keeps every caption true of its image."""

from __future__ import annotations

import random

import torch

from embedder_service.export import scene_batches
from imagesearch.synthetic import Scene


def _marked(position: str) -> tuple[torch.Tensor, Scene]:
    """A 3 x 9 x 9 image, one bright pixel where `position` says, and its scene."""
    image = torch.zeros(3, 9, 9)
    x, y = {"left": (0, 4), "right": (8, 4), "top": (4, 0), "bottom": (4, 8),
            "center": (4, 4)}[position]
    image[:, y, x] = 1.0
    return image, Scene("red", "circle", 1, "small", position, "white")


def test_dihedral_moves_each_position_word_with_the_pixels():
    rng = random.Random(3)
    for position in ("left", "right", "top", "bottom", "center"):
        image, scene = _marked(position)
        moved_to = set()
        for _ in range(30):
            pixels, scenes = scene_batches.dihedral(image[None], [scene], rng)
            assert torch.equal(pixels[0], _marked(scenes[0].position)[0])
            moved_to.add(scenes[0].position)
        assert moved_to == ({"center"} if position == "center"
                            else {"left", "right", "top", "bottom"})


def test_caption_targets_count_a_wrong_position_word_as_a_negative():
    left = Scene("red", "circle", 1, "small", "left", "white")
    right = Scene("red", "circle", 1, "small", "right", "white")
    texts = ["a red circle on the left", "a red circle", "a blue circle"]
    true = scene_batches.caption_targets([left, right], texts)
    assert true.tolist() == [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]


def test_caption_targets_need_the_right_count():
    two = Scene("red", "cross", 2, "large", "center", "dark")
    true = scene_batches.caption_targets([two], ["two red crosses", "a red cross",
                                                 "3 red crosses", "2 large red crosses"])
    assert true.tolist() == [[1.0, 0.0, 0.0, 1.0]]
