"""Captions in seven languages: one meaning per spec, grammar where it shows, a real hold-out."""

from __future__ import annotations

import pytest

from embedder_service.languages import detect_script_language
from imagesearch import synthetic
from imagesearch import synthetic_i18n as i18n
from imagesearch.synthetic_i18n import CaptionSpec

RED_STAR = synthetic.Scene("red", "star", 2, "small", "center", "white")


@pytest.mark.parametrize(("language", "caption"), [
    ("en", "a photo of two small red stars on a white background"),
    ("de", "Foto: zwei kleine rote Sterne auf weißem Hintergrund"),
    ("fr", "une photo de deux petites étoiles rouges sur fond blanc"),
    ("es", "una foto de dos estrellas rojas pequeñas sobre fondo blanco"),
    ("ru", "на фото две маленьких красных звезды на белом фоне"),
    ("zh", "一张两个小红色星形的照片，白色背景"),
    ("ar", "صورة نجمتان حمراوان صغيرتان على خلفية بيضاء"),
])
def test_one_spec_says_the_same_in_every_language(language, caption):
    spec = CaptionSpec(RED_STAR, size=True, background=True, template=1)
    assert i18n.render(spec, language) == caption


def test_french_elides_de_before_un():
    spec = CaptionSpec(synthetic.Scene("red", "circle", 1, "small", "left", "white"), template=1)
    assert i18n.render(spec, "fr") == "une photo d'un cercle rouge"


def test_training_never_names_a_held_out_pair():
    assert not {spec.pair for spec in i18n.training_specs(5000, 0)} & i18n.HELD_OUT_PAIRS
    assert {shape for _, shape in i18n.HELD_OUT_PAIRS} == set(synthetic.SHAPES)
    assert {colour for colour, _ in i18n.HELD_OUT_PAIRS} == set(synthetic.COLOURS)


@pytest.mark.parametrize("language", ["ru", "zh", "ar"])
def test_non_latin_captions_are_detected_by_script(language):
    assert {detect_script_language(i18n.render(spec, language))
            for spec in i18n.held_out_specs()} == {language}
