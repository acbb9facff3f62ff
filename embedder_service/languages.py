"""Which text tower embeds a text: by its BCP 47 language tag, or by the script it is written in.

Tags match the most specific tag a tower declares, then its language subtag alone ("de-CH" is
served by a tower declaring "de"; "zh-Hant" by one declaring "zh-Hant", else "zh"). An empty
tag means the default tower, exactly as before towers existed. A tag no tower serves is an
error naming the languages served: falling back quietly would hand back a vector that looks
valid and retrieves poorly, which a caller cannot tell from a bad query.

"auto" detects only what can be detected reliably from a short query: the script. Text mostly
in Cyrillic, Arabic, Han, kana, Hangul, Greek, Hebrew, Devanagari or Thai letters names a
language (ru, ar, zh, ja, ko, el, he, hi, th) and goes to the tower serving it; Latin-script
text, mixed text, or a script whose language no tower serves goes to the default tower. Telling
German from French from English in a three-word query needs a real language identifier, so
Latin-script languages other than the default's must be named.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

from imagesearch.errors import InvalidArgument

AUTO = "auto"
# The first word of a letter's Unicode name is its script for these blocks; kana are Japanese
# (a Japanese query mixes kana with Han, and kana decide it).
_SCRIPT_LANGUAGE = {
    "CYRILLIC": "ru", "ARABIC": "ar", "CJK": "zh", "HIRAGANA": "ja", "KATAKANA": "ja",
    "HANGUL": "ko", "GREEK": "el", "HEBREW": "he", "DEVANAGARI": "hi", "THAI": "th",
}


class UnknownLanguage(InvalidArgument):
    pass


@dataclass(frozen=True)
class Route:
    tower: int  # index into the towers given to the router; 0 is the default tower
    language: str  # the tag the tower was chosen for: as requested, detected, or "" (default)


def detect_script_language(text: str) -> str | None:
    """The language named by the script of most of the text's letters, or None (Latin, none)."""
    scripts: Counter[str] = Counter()
    for char in text:
        if char.isalpha():
            scripts[unicodedata.name(char, "UNKNOWN").split(" ")[0]] += 1
    if not scripts:
        return None
    if scripts["HIRAGANA"] + scripts["KATAKANA"] > 0:
        return "ja"
    script, count = scripts.most_common(1)[0]
    if count * 2 <= sum(scripts.values()):
        return None  # no majority script: mixed text
    return _SCRIPT_LANGUAGE.get(script)


class LanguageRouter:
    def __init__(self, tower_languages: list[tuple[str, ...]]) -> None:
        """`tower_languages[i]`: the tags tower i serves; tower 0 is the default tower."""
        self._by_tag = {tag.lower(): index for index, tags in enumerate(tower_languages)
                        for tag in tags}
        self.served = sorted(self._by_tag)

    def route(self, language: str, text: str) -> Route:
        if not language:
            return Route(0, "")
        if language.lower() == AUTO:
            detected = detect_script_language(text)
            tower = self._match(detected) if detected else None
            return Route(0, "") if tower is None else Route(tower, detected or "")
        tower = self._match(language)
        if tower is None:
            raise UnknownLanguage(
                f"no text tower serves language {language[:40]!r}; this model serves "
                f"{', '.join(self.served)} (or use \"auto\", or no language for the default "
                "tower)")
        return Route(tower, language)

    def _match(self, tag: str) -> int | None:
        """The tower declaring the longest prefix of `tag`, dropping subtags from the right."""
        parts = tag.lower().split("-")
        while parts:
            tower = self._by_tag.get("-".join(parts))
            if tower is not None:
                return tower
            parts.pop()
        return None
