"""A varied renderer of imagesearch.synthetic's scenes, for training a model that generalises.

imagesearch.synthetic.render draws every scene one way (one shade per colour, one geometry per
shape, flat backgrounds), so a model trained only on it learns that drawing style rather than
the words. This renderer draws the same Scene - the same words stay true - in many styles:
several shades per colour name with hue/saturation/value jitter, per-shape geometry (ellipses,
near-square rectangles, leaning and flipped triangles, star depth and point count, cross arm
widths), rounded corners, solid, shaded, outlined or hollow fills, with or without
anti-aliasing, gradient, textured and photographic backgrounds (imagesearch.synthetic_backgrounds),
partial occlusion by neutral patches, then blur, noise, tone changes and JPEG.

Sizes and positions keep their meaning (small and large radii do not overlap; positions keep
their slots) so captions naming them stay right. Copies of a shape lie in a row or column, on a
diagonal or scattered, so that counting is not tied to one layout. imagesearch.synthetic's own
output is unchanged.
"""

from __future__ import annotations

import colorsys
import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from imagesearch.synthetic import Scene
from imagesearch.synthetic_backgrounds import TRAINING_PHOTOS, background

# Several shades a person would still call by each name; jittered further in HSV per shape.
SHADES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((215, 40, 40), (185, 20, 30), (235, 65, 50), (160, 30, 35)),
    "green": ((40, 165, 60), (30, 120, 45), (95, 190, 65), (60, 145, 40)),
    "blue": ((40, 80, 215), (30, 50, 160), (75, 130, 230), (25, 95, 195)),
    "yellow": ((240, 210, 40), (250, 232, 85), (228, 195, 25), (245, 225, 125)),
    "orange": ((245, 135, 25), (235, 112, 25), (250, 155, 60), (225, 125, 45)),
    "purple": ((135, 55, 180), (100, 40, 140), (160, 95, 205), (120, 50, 165)),
    "pink": ((245, 125, 190), (240, 160, 205), (230, 90, 160), (250, 180, 215)),
    "brown": ((125, 80, 40), (100, 62, 30), (150, 100, 58), (112, 72, 48)),
}
_RADIUS = {"small": (0.12, 0.18), "large": (0.24, 0.31)}  # of the canvas, for one shape
_SLOTS = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27),
          "bottom": (0.5, 0.73), "center": (0.5, 0.5)}
Point = tuple[float, float]


def render(scene: Scene, size: int, rng: random.Random,
           photos: tuple[str, ...] = TRAINING_PHOTOS) -> Image.Image:
    """Draws the scene at `size` x `size` pixels in a randomly chosen style."""
    scale = 1 if rng.random() < 0.25 else rng.choice((2, 3, 4))  # 1: no anti-aliasing
    canvas = size * scale
    image = background(scene.background, canvas, rng, photos)
    low, high = _RADIUS[scene.size]
    radius = canvas * rng.uniform(low, high) / (1 + 0.25 * (scene.count - 1))
    radius = min(radius, canvas / (2.4 * scene.count))  # copies side by side barely touch
    centres = _centres(scene, canvas, radius, rng)
    base = rng.choice(SHADES[scene.colour])
    for cx, cy in centres:
        outline = _shape(scene.shape, cx, cy, radius * rng.uniform(0.9, 1.1), rng)
        _paint(image, outline, _shade(base, rng), radius, rng)
    if rng.random() < 0.2:
        _occlude(image, rng.choice(centres), radius, rng)
    if scale > 1:
        image = image.resize((size, size), rng.choice(
            (Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.BOX)))
    return _degrade(image, rng)


def _shade(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + rng.uniform(-0.02, 0.02)) % 1.0
    s = min(1.0, s * rng.uniform(0.85, 1.1))
    v = min(1.0, v * rng.uniform(0.88, 1.08))
    r, g, b = (round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))
    return (r, g, b)


def _centres(scene: Scene, canvas: int, radius: float, rng: random.Random) -> list[Point]:
    wobble = 0.05 * canvas
    if scene.count == 1:
        spots = [_SLOTS[scene.position]]
    else:
        layout = rng.choice(("line", "diagonal", "scattered"))
        if layout == "scattered":
            scattered = _scatter(scene.count, canvas, radius, rng)
            if scattered:
                return scattered
        slots = [(i + 0.5) / scene.count for i in range(scene.count)]
        if layout == "line":
            horizontal = rng.random() < 0.5
            spots = [(s, 0.5) if horizontal else (0.5, s) for s in slots]
        else:  # either diagonal; also what a failed scatter falls back to
            falling = rng.random() < 0.5
            spots = [(s, s if falling else 1 - s) for s in slots]
    return [(x * canvas + rng.uniform(-wobble, wobble), y * canvas + rng.uniform(-wobble, wobble))
            for x, y in spots]


def _scatter(count: int, canvas: int, radius: float, rng: random.Random) -> list[Point]:
    """`count` centres anywhere on the canvas, the shapes apart and inside it; [] if no luck.

    Copies of a shape are counted wherever they lie: with rows alone a model learns "a row of
    three" rather than "three" (bench/RESULTS.md, issue 16)."""
    low, high = 1.1 * radius, canvas - 1.1 * radius
    for _ in range(50):
        spots = [(rng.uniform(low, high), rng.uniform(low, high)) for _ in range(count)]
        if all(math.dist(a, b) > 2.3 * radius for i, a in enumerate(spots)
               for b in spots[i + 1:]):
            return spots
    return []


def _shape(shape: str, cx: float, cy: float, r: float, rng: random.Random) -> list[Point]:
    """The outline of one shape as a polygon in canvas coordinates, varied per shape."""
    points, turn = _GEOMETRY[shape](rng)
    if shape != "circle" and rng.random() < 0.3:
        # Twice rounded, stars and crosses turn into blobs: once only for them.
        points = _round_corners(points, 1 if shape in ("star", "cross") else rng.randint(1, 2))
    c, s = math.cos(turn), math.sin(turn)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points]


def _ring(corners: int, radius: float, turn: float) -> list[Point]:
    return [(radius * math.cos(turn + 2 * math.pi * k / corners),
             radius * math.sin(turn + 2 * math.pi * k / corners)) for k in range(corners)]


def _circle(rng: random.Random) -> tuple[list[Point], float]:
    squash = rng.uniform(0.78, 1.0)
    return [(x, y * squash) for x, y in _ring(48, 1.0, 0)], rng.uniform(0, math.pi)


def _square(rng: random.Random) -> tuple[list[Point], float]:
    w, h = 0.9, 0.9 * rng.uniform(0.85, 1.0)
    return [(-w, -h), (w, -h), (w, h), (-w, h)], rng.uniform(-0.6, 0.6)


def _triangle(rng: random.Random) -> tuple[list[Point], float]:
    apex, half = rng.uniform(-0.35, 0.35), rng.uniform(0.85, 1.15)
    flip = math.pi if rng.random() < 0.15 else 0.0
    return [(apex, -1.1), (-half, 0.75), (half, 0.75)], flip + rng.uniform(-0.45, 0.45)


def _star(rng: random.Random) -> tuple[list[Point], float]:
    points = 5 if rng.random() < 0.85 else 6
    outer = _ring(points, 1.15, -math.pi / 2)
    inner = _ring(points, 1.15 * rng.uniform(0.38, 0.6), -math.pi / 2 + math.pi / points)
    return [p for pair in zip(outer, inner, strict=True) for p in pair], rng.uniform(-0.5, 0.5)


def _hexagon(rng: random.Random) -> tuple[list[Point], float]:
    squash = rng.uniform(0.85, 1.0)
    return [(x, y * squash) for x, y in _ring(6, 1.0, 0)], rng.uniform(0, math.pi)


def _cross(rng: random.Random) -> tuple[list[Point], float]:
    a = rng.uniform(0.2, 0.45)  # half the arm's width
    top, bottom = (1.0, 1.0) if rng.random() < 0.85 else (0.7, 1.3)  # plus or Latin cross
    shift = (bottom - top) / 2
    outline = [(-a, -top), (a, -top), (a, -a), (1, -a), (1, a), (a, a), (a, bottom),
               (-a, bottom), (-a, a), (-1, a), (-1, -a), (-a, -a)]
    return [(x, y - shift) for x, y in outline], rng.uniform(-0.35, 0.35)


_GEOMETRY = {"circle": _circle, "square": _square, "triangle": _triangle, "star": _star,
             "hexagon": _hexagon, "cross": _cross}


def _round_corners(points: list[Point], rounds: int) -> list[Point]:
    """Chaikin corner cutting: each round replaces every corner by two points on its edges."""
    for _ in range(rounds):
        pairs = zip(points, points[1:] + points[:1], strict=True)
        points = [q for (x0, y0), (x1, y1) in pairs
                  for q in ((0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1),
                            (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1))]
    return points


def _paint(image: Image.Image, outline: list[Point], colour: tuple[int, int, int],
           radius: float, rng: random.Random) -> None:
    """Fills the shape solid, shaded, hollow, or with an outline of another tone."""
    style = rng.choices(("solid", "shaded", "hollow", "outlined"), (5, 2, 1, 2))[0]
    width = max(1, round(radius * rng.uniform(0.1, 0.2)))
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    if style == "hollow":
        draw.line([*outline, outline[0]], fill=255, width=width, joint="curve")
    else:
        draw.polygon(outline, fill=255)
    image.paste(_fill(image.size, colour, rng) if style == "shaded" else colour, mask=mask)
    if style == "outlined":
        edge = Image.new("L", image.size, 0)
        ImageDraw.Draw(edge).line([*outline, outline[0]], fill=255,
                                  width=max(1, width // 2), joint="curve")
        factor = rng.choice((0.55, 0.7, 1.3))
        tone = tuple(min(255, round(c * factor)) for c in colour)
        image.paste(tone if rng.random() < 0.7 else rng.choice(((20, 20, 20), (235, 235, 235))),
                    mask=edge)


def _fill(size: tuple[int, int], colour: tuple[int, int, int], rng: random.Random) -> Image.Image:
    """The colour lit from one side: brighter on one edge, darker on the other."""
    axis = np.linspace(-1, 1, size[0], dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = axis[None, :] * math.cos(angle) + axis[:, None] * math.sin(angle)
    light = 1 + rng.uniform(0.12, 0.25) * ramp
    pixels = np.asarray(colour, dtype=np.float32)[None, None, :] * light[:, :, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _occlude(image: Image.Image, centre: Point, radius: float, rng: random.Random) -> None:
    """A neutral patch over part of one shape: most of it stays visible."""
    angle = rng.uniform(0, 2 * math.pi)
    x = centre[0] + radius * 0.9 * math.cos(angle)
    y = centre[1] + radius * 0.9 * math.sin(angle)
    half = radius * rng.uniform(0.3, 0.5)
    grey = rng.randint(0, 255)
    box = (x - half, y - half, x + half, y + half)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=(grey, grey, grey))


def _degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """What cameras, editors and uploads do: blur, tone, noise, JPEG."""
    if rng.random() < 0.35:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    pixels = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.3:
        pixels = 128 + (pixels - 128) * rng.uniform(0.8, 1.15) + rng.uniform(-15, 15)
    if rng.random() < 0.4:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 12),
                                                                  pixels.shape)
        pixels = pixels + noise.astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(25, 90))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image
