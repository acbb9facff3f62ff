"""Language routing: BCP 47 matching and script detection, without a model."""

from __future__ import annotations

import pytest

from embedder_service.languages import (
    LanguageRouter,
    Route,
    UnknownLanguage,
    detect_script_language,
)

ROUTER = LanguageRouter([("en",), ("de", "zh", "zh-Hant", "ar")])


@pytest.mark.parametrize(("text", "language"), [
    ("красный круг", "ru"), ("دائرة حمراء", "ar"), ("红色的圆形", "zh"), ("赤い丸", "ja"),
    ("빨간 원", "ko"), ("κόκκινος κύκλος", "el"), ("a red circle", None), ("ein roter Kreis", None),
    ("123 !!", None), ("a red circle круг", None),
])
def test_script_names_a_language_only_when_it_can(text, language):
    assert detect_script_language(text) == language


@pytest.mark.parametrize(("tag", "route"), [
    ("", Route(0, "")), ("EN", Route(0, "EN")), ("de-AT", Route(1, "de-AT")),
    ("zh-Hant-TW", Route(1, "zh-Hant-TW")), ("zh-Hans", Route(1, "zh-Hans")),
])
def test_tags_match_the_most_specific_declared_prefix(tag, route):
    assert ROUTER.route(tag, "x") == route


def test_auto_falls_back_to_the_default_for_scripts_no_tower_serves():
    assert ROUTER.route("auto", "красный круг") == Route(0, "")
    assert ROUTER.route("auto", "دائرة حمراء") == Route(1, "ar")


def test_unknown_tag_names_the_languages_served():
    with pytest.raises(UnknownLanguage, match="serves ar, de, en, zh, zh-hant"):
        ROUTER.route("fr", "un cercle")
