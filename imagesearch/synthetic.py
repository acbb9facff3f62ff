"""Procedurally generated images with captions: the bundled small model's world.

Each scene holds 1-3 copies of one shape in one colour, of one size, on a plain background,
with positional jitter and small colour noise. Captions paraphrase the scene and mention a
random subset of its attributes, so the model learns what each word means. Used to train the
small model, to test it, and to give the offline demo something to index. Needs only Pillow.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (240, 210, 40),
    "orange": (245, 135, 25),
    "purple": (135, 55, 180),
    "pink": (245, 125, 190),
    "brown": (125, 80, 40),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (150, 150, 150),
    "dark": (40, 40, 45),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_PLURALS = {"cross": "crosses"}


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    count: int
    size: str
    position: str
    background: str

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def random_scene(rng: random.Random) -> Scene:
    count = rng.choice((1, 1, 1, 2, 3))
    return Scene(
        colour=rng.choice(list(COLOURS)),
        shape=rng.choice(SHAPES),
        count=count,
        size=rng.choice(SIZES),
        position=rng.choice(POSITIONS) if count == 1 else "center",
        background=rng.choice(list(BACKGROUNDS)),
    )


def plural(shape: str) -> str:
    return _PLURALS.get(shape, shape + "s")


def caption(scene: Scene, rng: random.Random) -> str:
    """A paraphrased description mentioning colour and shape plus a random subset of the rest."""
    noun = scene.shape if scene.count == 1 else plural(scene.shape)
    words = [scene.colour, noun]
    if rng.random() < 0.4:
        words.insert(0, scene.size)
    head = "a" if scene.count == 1 else _COUNT_WORDS[scene.count]
    if scene.count > 1 and rng.random() < 0.3:
        head = str(scene.count)
    if scene.count == 1 and rng.random() < 0.15:
        words.append("shape")
    phrase = " ".join([head, *words])
    if head == "a" and phrase.split()[1][0] in "aeiou":
        phrase = "an" + phrase[1:]
    extras = []
    if scene.count == 1 and scene.position != "center" and rng.random() < 0.4:
        extras.append(("at the " if scene.position in ("top", "bottom") else "on the ")
                      + scene.position)
    if rng.random() < 0.35:
        extras.append(f"on a {scene.background} background")
    template = rng.choice(("{}", "a photo of {}", "an image of {}", "a picture showing {}", "{}"))
    return " ".join([template.format(phrase), *extras])


def render(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """Draws the scene at `size` x `size` pixels (4x supersampled for smooth edges)."""
    scale = 4
    canvas = size * scale
    image = Image.new("RGB", (canvas, canvas), _jitter(BACKGROUNDS[scene.background], rng, 8))
    draw = ImageDraw.Draw(image)
    radius = canvas * (0.16 if scene.size == "small" else 0.28) / (1 + 0.25 * (scene.count - 1))
    for cx, cy in _centres(scene, canvas, radius, rng):
        fill = _jitter(COLOURS[scene.colour], rng, 18)
        _draw_shape(draw, scene.shape, cx, cy, radius * rng.uniform(0.9, 1.1), fill, rng)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)
    return (r, g, b)


def _centres(
    scene: Scene, canvas: int, radius: float, rng: random.Random
) -> list[tuple[float, float]]:
    if scene.count > 1:
        slots = [(i + 0.5) / scene.count for i in range(scene.count)]
        horizontal = rng.random() < 0.5
        spots = [(s, 0.5) if horizontal else (0.5, s) for s in slots]
    else:
        spots = [{"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27),
                  "bottom": (0.5, 0.73), "center": (0.5, 0.5)}[scene.position]]
    wobble = 0.04 * canvas
    return [(x * canvas + rng.uniform(-wobble, wobble), y * canvas + rng.uniform(-wobble, wobble))
            for x, y in spots]


def _polygon(cx: float, cy: float, r: float, corners: int,
             turn: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(turn + 2 * math.pi * k / corners),
             cy + r * math.sin(turn + 2 * math.pi * k / corners)) for k in range(corners)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int], rng: random.Random) -> None:
    turn = rng.uniform(-0.25, 0.25)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r * 1.2, 4, math.pi / 4 + turn), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.15, 3, -math.pi / 2 + turn), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, turn), fill=fill)
    elif shape == "star":
        outer = _polygon(cx, cy, r * 1.2, 5, -math.pi / 2 + turn)
        inner = _polygon(cx, cy, r * 0.5, 5, -math.pi / 2 + math.pi / 5 + turn)
        draw.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=fill)
    elif shape == "cross":
        arm = r * 0.38
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def held_out_set(seed: int, image_size: int = 96) -> list[tuple[Scene, Image.Image, str]]:
    """One scene per colour x shape (count 1), with a caption naming just those two.

    Text->image top-1 accuracy over this set is the small model's quality bar: each caption
    must retrieve its own image among all 48.
    """
    rng = random.Random(seed)
    items = []
    for colour in COLOURS:
        for shape in SHAPES:
            scene = Scene(colour, shape, 1, rng.choice(SIZES), rng.choice(POSITIONS),
                          rng.choice(list(BACKGROUNDS)))
            article = "an" if colour[0] in "aeiou" else "a"
            text = rng.choice(("{} {} {}", "a photo of {} {} {}", "{} {} {} shape")).format(
                article, colour, shape)
            items.append((scene, render(scene, image_size, rng), text))
    return items
