"""A second renderer of imagesearch.synthetic's scenes, written for evaluation only: the
bundled model never saw its images (it was trained on imagesearch.synthetic.render's).

The same vocabulary - colours, shapes, counts, sizes, positions - drawn differently: other
shades of each colour, other geometry for each shape (ellipses, rounded and outlined
polygons, fatter stars, thinner crosses), gradient and
textured backgrounds in place of flat ones, sensor-like noise, a slight blur and JPEG
compression. What a specialised collection looks like to a model trained elsewhere: the words
still apply, the pixels are not the ones it learnt them from.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from imagesearch.synthetic import Scene

# Other shades of the same colour words: darker, paler or shifted in hue from the training
# renderer's (imagesearch.synthetic.COLOURS), still plainly that colour to a person.
SHADES: dict[str, tuple[int, int, int]] = {
    "red": (170, 25, 55),
    "green": (90, 170, 40),
    "blue": (60, 130, 200),
    "yellow": (225, 225, 90),
    "orange": (230, 105, 45),
    "purple": (110, 60, 140),
    "pink": (230, 150, 160),
    "brown": (150, 105, 60),
}
# Background pairs for gradients, by the scene's background word.
GRADIENTS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "white": ((250, 240, 225), (205, 215, 230)),
    "gray": ((120, 130, 125), (175, 165, 160)),
    "dark": ((20, 30, 50), (70, 55, 50)),
}


def render(scene: Scene, size: int, rng: random.Random, quality: int = 45) -> bytes:
    """The scene as JPEG bytes, `size` x `size` pixels."""
    scale = 4
    canvas = size * scale
    image = _background(scene.background, canvas, rng)
    draw = ImageDraw.Draw(image)
    radius = canvas * (0.15 if scene.size == "small" else 0.27) / (1 + 0.25 * (scene.count - 1))
    for cx, cy in _centres(scene, canvas, radius, rng):
        fill = _shade(SHADES[scene.colour], rng)
        _draw(draw, scene.shape, cx, cy, radius * rng.uniform(0.85, 1.15), fill, rng, scale)
    small = image.resize((size, size), Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    pixels = np.asarray(small, dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 9.0, pixels.shape)
    noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _shade(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    bright = rng.uniform(0.85, 1.12)
    r, g, b = (min(255, max(0, int(c * bright) + rng.randint(-12, 12))) for c in rgb)
    return (r, g, b)


def _background(word: str, canvas: int, rng: random.Random) -> Image.Image:
    """A linear gradient at a random angle, with faint stripes or blotches on top."""
    start, end = (np.asarray(c, dtype=np.float32) for c in GRADIENTS[word])
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:canvas, 0:canvas] / canvas
    t = np.clip(0.5 + (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle), 0, 1)
    pixels = start + (end - start) * t[..., None]
    if rng.random() < 0.5:
        period = rng.uniform(0.05, 0.15)
        pixels += 10 * np.sin(2 * math.pi * (xs + ys) / period)[..., None]
    else:
        blotches = np.random.default_rng(rng.getrandbits(32)).normal(0, 1, (8, 8))
        big = np.asarray(Image.fromarray(blotches.astype(np.float32)).resize(
            (canvas, canvas), Image.Resampling.BICUBIC))
        pixels += 12 * big[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _centres(scene: Scene, canvas: int, radius: float, rng: random.Random
             ) -> list[tuple[float, float]]:
    if scene.count > 1:
        # Diagonal or scattered, where the training renderer lines copies up in a row.
        if rng.random() < 0.5:
            return [((i + 0.5) / scene.count * canvas, (i + 0.5) / scene.count * canvas)
                    for i in range(scene.count)]
        slots = [(0.3, 0.3), (0.7, 0.35), (0.45, 0.72)]
        return [(x * canvas, y * canvas) for x, y in slots[:scene.count]]
    spots = {"left": (0.3, 0.45), "right": (0.7, 0.55), "top": (0.55, 0.3),
             "bottom": (0.45, 0.7), "center": (0.5, 0.5)}
    x, y = spots[scene.position]
    wobble = 0.05 * canvas
    return [(x * canvas + rng.uniform(-wobble, wobble), y * canvas + rng.uniform(-wobble, wobble))]


def _points(cx: float, cy: float, r: float, corners: int, turn: float
            ) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(turn + 2 * math.pi * k / corners),
             cy + r * math.sin(turn + 2 * math.pi * k / corners)) for k in range(corners)]


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
          fill: tuple[int, int, int], rng: random.Random, scale: int) -> None:
    turn = rng.uniform(-0.6, 0.6)
    outline = rng.random() < 0.35  # drawn as a thick outline, not filled
    width = int(r * 0.28)
    if shape == "circle":
        squash = rng.uniform(0.7, 1.0)  # an ellipse
        box = (cx - r, cy - r * squash, cx + r, cy + r * squash)
        draw.ellipse(box, outline=fill, width=width) if outline else draw.ellipse(box, fill=fill)
        return
    if shape == "square":
        side = r * 0.9
        box = (cx - side, cy - side, cx + side, cy + side)
        radius = int(side * rng.uniform(0.15, 0.4))  # rounded corners
        if outline:
            draw.rounded_rectangle(box, radius, outline=fill, width=width)
        else:
            draw.rounded_rectangle(box, radius, fill=fill)
        return
    if shape == "cross":
        arm = r * rng.uniform(0.18, 0.26)  # thinner arms
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
        return
    if shape == "triangle":
        top = (cx + r * 0.4 * turn, cy - r * 1.1)  # not equilateral: a leaning apex
        points = [top, (cx - r * 1.1, cy + r * 0.8), (cx + r * 1.1, cy + r * 0.8)]
    elif shape == "hexagon":
        points = _points(cx, cy, r, 6, math.pi / 6 + turn)
    elif shape == "star":
        outer = _points(cx, cy, r * 1.15, 5, -math.pi / 2 + turn)
        inner = _points(cx, cy, r * 0.62, 5, -math.pi / 2 + math.pi / 5 + turn)  # fatter
        points = [p for pair in zip(outer, inner, strict=True) for p in pair]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    if outline:
        draw.line([*points, points[0]], fill=fill, width=width, joint="curve")
    else:
        draw.polygon(points, fill=fill)
