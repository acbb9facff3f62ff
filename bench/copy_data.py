"""The copy-detection evaluation's images: real photos, edits of them, generated distractors.

Photos: every photograph scikit-image ships without a download (19; `cat` is left out because
it is the same photo as `chelsea`, and drawings such as `logo` or `checkerboard` are not
photos). Two edit sets that never share parameters: REPORT is the fixed set the issue names
and the figures in bench/RESULTS.md are measured on; TUNING (other crop fractions, angles,
qualities, frames, watermark text) is what the thresholds in imagesearch/copies/verify.py were
chosen on. Distractors are drawn by `distractor`, a generator of its own (several shapes,
gradients, lines, noise), with separate seeds for tuning and reporting.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins",
          "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
          "microaneurysms", "moon", "page", "retina", "rocket", "text")

Edit = Callable[[Image.Image, random.Random], Image.Image]


def photos() -> dict[str, Image.Image]:
    import skimage.data

    found = {}
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        if array.dtype != np.uint8:
            span = max(float(array.max() - array.min()), 1e-9)
            array = (255 * (array - array.min()) / span).astype(np.uint8)
        found[name] = Image.fromarray(array[..., :3] if array.ndim == 3 else array).convert("RGB")
    return found


def _crop(fraction: float) -> Edit:
    def edit(image: Image.Image, rng: random.Random) -> Image.Image:
        w, h = image.size
        dx, dy = int(w * fraction), int(h * fraction)
        left, top = rng.randint(0, dx), rng.randint(0, dy)
        return image.crop((left, top, left + w - dx, top + h - dy))
    return edit


def _jpeg(quality: int) -> Edit:
    def edit(image: Image.Image, rng: random.Random) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return edit


def _resize(factor: float) -> Edit:
    return lambda image, rng: image.resize(
        (max(8, int(image.width * factor)), max(8, int(image.height * factor))),
        Image.Resampling.BILINEAR)


def _colour(brightness: float, saturation: float) -> Edit:
    return lambda image, rng: ImageEnhance.Color(
        ImageEnhance.Brightness(image).enhance(brightness)).enhance(saturation)


def _rotate(degrees: float) -> Edit:
    return lambda image, rng: image.rotate(degrees, resample=Image.Resampling.BICUBIC)


def _watermark(text: str) -> Edit:
    def edit(image: Image.Image, rng: random.Random) -> Image.Image:
        marked = image.copy()
        draw = ImageDraw.Draw(marked)
        size = max(10, image.height // 12)
        draw.text((image.width * 0.08, image.height * 0.78), text, fill=(255, 255, 255),
                  font_size=size)
        draw.text((image.width * 0.45, image.height * 0.08), text.upper(), fill=(255, 0, 0),
                  font_size=size)
        return marked
    return edit


def _pad(wide: float, high: float, colour: tuple[int, int, int]) -> Edit:
    """The photo inside a larger frame, as a screenshot of it would be."""
    def edit(image: Image.Image, rng: random.Random) -> Image.Image:
        frame = Image.new("RGB", (int(image.width * wide), int(image.height * high)), colour)
        left = rng.randint(0, frame.width - image.width)
        top = rng.randint(0, frame.height - image.height)
        frame.paste(image, (left, top))
        return frame
    return edit


REPORT: dict[str, Edit] = {
    "resize50": _resize(0.5),
    "jpeg30": _jpeg(30),
    "crop10": _crop(0.10),
    "crop20": _crop(0.20),
    "colour": _colour(1.15, 1.4),
    "hflip": lambda image, rng: ImageOps.mirror(image),
    "rotate5": _rotate(5),
    "watermark": _watermark("(c) someone else 2026"),
    "pad": _pad(1.6, 1.5, (30, 30, 34)),
}

TUNING: dict[str, Edit] = {
    "resize35": _resize(0.35),
    "jpeg40": _jpeg(40),
    "crop15": _crop(0.15),
    "crop25": _crop(0.25),
    "colour": _colour(0.85, 0.6),
    "hflip_jpeg": lambda image, rng: _jpeg(60)(ImageOps.mirror(image), rng),
    "rotate3": _rotate(-3),
    "rotate7": _rotate(7),
    "watermark": _watermark("stock photo - do not copy"),
    "pad": _pad(1.3, 1.8, (240, 240, 240)),
    "blur": lambda image, rng: image.filter(ImageFilter.GaussianBlur(1.5)),
}


def distractor(rng: random.Random, size: int = 320) -> Image.Image:
    """A generated image unlike any other: a gradient, 3-8 shapes, lines and noise."""
    top = tuple(rng.randint(0, 255) for _ in range(3))
    bottom = tuple(rng.randint(0, 255) for _ in range(3))
    ramp = np.linspace(0, 1, size)[:, None, None]
    pixels = (np.array(top) * (1 - ramp) + np.array(bottom) * ramp) * np.ones((1, size, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size * 0.05, size * 0.3)
        corners = rng.choice((0, 3, 4, 5, 6))
        if corners == 0:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        else:
            turn = rng.uniform(0, math.pi)
            draw.polygon([(x + r * math.cos(turn + 2 * math.pi * k / corners),
                           y + r * math.sin(turn + 2 * math.pi * k / corners))
                          for k in range(corners)], fill=fill)
    for _ in range(rng.randint(0, 4)):
        draw.line([(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)],
                  fill=tuple(rng.randint(0, 255) for _ in range(3)), width=rng.randint(1, 6))
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(0, 12),
                                                                 (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
