"""The varied training renderer draws every scene the vocabulary allows, reproducibly."""

from __future__ import annotations

import random

import numpy as np

from imagesearch import synthetic, synthetic_varied
from imagesearch.synthetic import Scene
from imagesearch.synthetic_backgrounds import EVALUATION_PHOTOS, TRAINING_PHOTOS


def test_every_colour_shape_and_background_renders_at_the_asked_size():
    rng = random.Random(3)
    for colour in synthetic.COLOURS:
        for shape in synthetic.SHAPES:
            for background in synthetic.BACKGROUNDS:
                scene = Scene(colour, shape, rng.choice((1, 2, 3)), rng.choice(synthetic.SIZES),
                              "center", background)
                image = synthetic_varied.render(scene, 48, rng)
                assert (image.mode, image.size) == ("RGB", (48, 48))


def test_the_same_seed_draws_the_same_image():
    scene = Scene("red", "star", 2, "large", "center", "dark")
    first = synthetic_varied.render(scene, 64, random.Random(9))
    second = synthetic_varied.render(scene, 64, random.Random(9))
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_photographs_kept_for_evaluation_are_never_trained_on():
    assert not set(TRAINING_PHOTOS) & set(EVALUATION_PHOTOS)
