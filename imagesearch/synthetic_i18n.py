"""Captions of imagesearch.synthetic scenes in seven languages, and the held-out split.

A `CaptionSpec` fixes what a caption says (which attributes, counts as words or digits, which
template); `render(spec, language)` says it in en, de, fr, es, ru, zh or ar with the grammar
each needs (gender and number agreement, Russian's genitive after два/три, Arabic's dual). The
same spec in two languages means the same thing, which is what distilling a multilingual text
tower from an English one needs. Vocabulary: imagesearch.synthetic_lexicon (hand-translated).

Held out: eight colour x shape pairs (each colour once, each shape at least once) that no
training caption in any language names, so evaluation asks the student to compose words it
learnt apart.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from imagesearch import synthetic
from imagesearch import synthetic_lexicon as lex

LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ar")
HELD_OUT_PAIRS = frozenset(
    (colour, synthetic.SHAPES[(5 * i + 2) % len(synthetic.SHAPES)])
    for i, colour in enumerate(synthetic.COLOURS))


@dataclass(frozen=True)
class CaptionSpec:
    scene: synthetic.Scene
    size: bool = False  # mention the size
    digits: bool = False  # a count above one as a digit ("2") rather than a word
    position: bool = False  # mention the position (only for one shape off centre)
    background: bool = False
    template: int = 0  # index into the lexicon's TEMPLATES

    @property
    def pair(self) -> tuple[str, str]:
        return (self.scene.colour, self.scene.shape)


def random_spec(rng: random.Random) -> CaptionSpec:
    scene = synthetic.random_scene(rng)
    return CaptionSpec(scene, size=rng.random() < 0.4, digits=rng.random() < 0.3,
                       position=scene.count == 1 and scene.position != "center"
                       and rng.random() < 0.4,
                       background=rng.random() < 0.35, template=rng.randrange(3))


def training_specs(count: int, seed: int) -> Iterator[CaptionSpec]:
    """Random specs whose colour x shape pair is not held out."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        spec = random_spec(rng)
        if spec.pair not in HELD_OUT_PAIRS:
            made += 1
            yield spec


def held_out_specs(pairs: frozenset[tuple[str, str]] = HELD_OUT_PAIRS) -> list[CaptionSpec]:
    """Each pair at counts 1-3 in each template, naming colour, shape and count only."""
    return [CaptionSpec(synthetic.Scene(colour, shape, count, "small", "center", "white"),
                        template=template)
            for colour, shape in sorted(pairs) for count in (1, 2, 3) for template in range(3)]


def render(spec: CaptionSpec, language: str) -> str:
    phrase = _english(spec) if language == "en" else _phrase(spec, language)
    extras = _extras(spec, language)
    text = lex.TEMPLATES[language][spec.template].format(phrase)
    if language == "fr":  # "une photo de un cercle" elides to "une photo d'un cercle"
        text = text.replace(" de un", " d'un")
    return "，".join([text, *extras]) if language == "zh" else " ".join([text, *extras])


def _english(spec: CaptionSpec) -> str:
    scene = spec.scene
    noun = scene.shape if scene.count == 1 else synthetic.plural(scene.shape)
    words = [scene.size, scene.colour, noun] if spec.size else [scene.colour, noun]
    head = "a" if scene.count == 1 else (str(scene.count) if spec.digits
                                         else ("one", "two", "three")[scene.count - 1])
    if head == "a" and words[0][0] in "aeiou":
        head = "an"
    return " ".join([head, *words])


def _phrase(spec: CaptionSpec, language: str) -> str:
    scene = spec.scene
    gender, singular, plural = lex.SHAPES[language][scene.shape]
    key, noun = _agreement(language, gender, scene.count, singular, plural)
    colour = lex.ADJECTIVES[language][scene.colour][key]
    size = lex.ADJECTIVES[language][scene.size][key] if spec.size else ""
    counts = lex.COUNTS[language]
    head = counts.get((scene.count, gender), counts.get((scene.count, "*"), ""))
    if spec.digits and scene.count > 1 and language != "ar":
        head = f"{scene.count}个" if language == "zh" else str(scene.count)
    order = {"de": (head, size, colour, noun), "ru": (head, size, colour, noun),
             "fr": (head, size, noun, colour), "es": (head, noun, colour, size),
             "ar": (head, noun, colour, size), "zh": (head, size, colour, noun)}[language]
    return ("" if language == "zh" else " ").join(word for word in order if word)


def _agreement(language: str, gender: str, count: int, singular: str,
               plural: str) -> tuple[str, str]:
    """The adjective form key and the noun form for this gender and count."""
    if language == "ar":
        dual, many = plural.split("|")
        return {1: (gender, singular), 2: ("d" + gender, dual), 3: ("pl", many)}[count]
    if count == 1:
        return gender, singular
    return {"de": "pl", "ru": "gpl", "zh": ""}.get(language, gender + "pl"), plural


def _extras(spec: CaptionSpec, language: str) -> list[str]:
    extras = []
    if spec.position:
        position = spec.scene.position
        extras.append(lex.POSITIONS[language][position] if language != "en" else
                      ("at the " if position in ("top", "bottom") else "on the ") + position)
    if spec.background:
        background = spec.scene.background
        extras.append(lex.BACKGROUNDS[language][background] if language != "en"
                      else f"on a {background} background")
    return extras
