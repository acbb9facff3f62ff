"""Backgrounds for the varied training renderer (imagesearch.synthetic_varied).

Each of imagesearch.synthetic's background words ("white", "gray", "dark") stays true of what is
drawn, so captions that name it stay right, but the pixels vary: flat, linear and radial
gradients, procedural textures (value noise, stripes, checks, grain) and crops of scikit-image's
bundled sample photographs (no download), toned towards the word's brightness.

Only TRAINING_PHOTOS are used here; EVALUATION_PHOTOS are kept out of training so an evaluation
can put unseen photographs behind the shapes.
"""

from __future__ import annotations

import math
import random
from functools import cache

import numpy as np
from PIL import Image

TRAINING_PHOTOS = ("astronaut", "brick", "camera", "coffee", "coins", "grass", "gravel",
                   "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
                   "text", "motorcycle")
EVALUATION_PHOTOS = ("chelsea", "rocket", "clock", "cell", "horse")
# Brightness range (0-255) a background of each word may take.
_TONES = {"white": (205, 255), "gray": (105, 175), "dark": (10, 70)}


def background(word: str, canvas: int, rng: random.Random,
               photos: tuple[str, ...] = TRAINING_PHOTOS) -> Image.Image:
    """A `canvas` x `canvas` RGB background that a person would still call `word`."""
    kind = rng.choices(("flat", "linear", "radial", "texture", "photo"), (3, 2, 1, 2, 2))[0]
    tone = _tone(word, rng)
    if kind == "photo":
        return photo_background(word, canvas, rng, photos)
    if kind == "flat":
        return Image.new("RGB", (canvas, canvas), tuple(int(c) for c in tone))
    field = {"linear": _linear, "radial": _radial, "texture": _texture}[kind](canvas, rng)
    spread = rng.uniform(10, 40) if word != "dark" else rng.uniform(6, 22)
    pixels = tone[None, None, :] + spread * field[:, :, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def photo_background(word: str, canvas: int, rng: random.Random,
                     photos: tuple[str, ...]) -> Image.Image:
    """A random crop of one of `photos`, toned towards `word`: paled for white, flattened
    towards mid-grey for gray, darkened for dark (the word stays true, the texture is real)."""
    photo = _photo(rng.choice(photos))
    side = min(photo.shape[:2])
    crop = int(side * rng.uniform(0.25, 1.0))
    y, x = rng.randint(0, photo.shape[0] - crop), rng.randint(0, photo.shape[1] - crop)
    pixels = np.asarray(Image.fromarray(photo[y:y + crop, x:x + crop]).resize(
        (canvas, canvas), Image.Resampling.BILINEAR), dtype=np.float32)
    grey = pixels.mean(axis=2, keepdims=True)
    if word == "white":
        pixels = 255 - (255 - pixels) * rng.uniform(0.15, 0.4)
    elif word == "gray":
        muted = grey + (pixels - grey) * rng.uniform(0.2, 0.6)
        pixels = 140 + (muted - 128) * rng.uniform(0.25, 0.5)
    else:
        pixels = pixels * rng.uniform(0.15, 0.35)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _tone(word: str, rng: random.Random) -> np.ndarray:
    low, high = _TONES[word]
    level = rng.uniform(low, high)
    tint = np.array([rng.uniform(-1, 1) for _ in range(3)]) * (12 if word != "dark" else 6)
    return np.asarray(level + tint, dtype=np.float32)


def _grid(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(canvas, dtype=np.float32) + 0.5) / canvas
    return np.meshgrid(axis, axis)


def _linear(canvas: int, rng: random.Random) -> np.ndarray:
    x, y = _grid(canvas)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
    return ramp / 0.7


def _radial(canvas: int, rng: random.Random) -> np.ndarray:
    x, y = _grid(canvas)
    cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return (0.5 - distance) * (1 if rng.random() < 0.5 else -1)


def _texture(canvas: int, rng: random.Random) -> np.ndarray:
    """A zero-centred field in about [-1, 1]: smooth noise, stripes, checks or grain."""
    x, y = _grid(canvas)
    kind = rng.choice(("noise", "stripes", "checks", "grain"))
    if kind == "noise":
        cells = rng.randint(3, 12)
        coarse = np.random.default_rng(rng.getrandbits(32)).uniform(-1, 1, (cells, cells))
        image = Image.fromarray(((coarse + 1) * 127.5).astype(np.uint8))
        return np.asarray(image.resize((canvas, canvas), Image.Resampling.BICUBIC),
                          dtype=np.float32) / 127.5 - 1
    if kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(0.04, 0.2)
        phase = (x * math.cos(angle) + y * math.sin(angle)) / period
        return np.sin(2 * math.pi * phase).astype(np.float32)
    if kind == "checks":
        period = rng.uniform(0.05, 0.2)
        return (((x // period + y // period) % 2) * 2 - 1).astype(np.float32)
    return np.random.default_rng(rng.getrandbits(32)).normal(0, 0.6, x.shape).astype(np.float32)


@cache
def _photo(name: str) -> np.ndarray:
    """An RGB uint8 array of one of scikit-image's bundled sample images."""
    import skimage.data  # only the varied renderer needs scikit-image

    if name == "motorcycle":
        array = np.asarray(skimage.data.stereo_motorcycle()[0])  # type: ignore[no-untyped-call]
    else:
        array = np.asarray(getattr(skimage.data, name)())
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        array = (255 * (array - array.min()) / max(1e-9, float(np.ptp(array)))).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])
