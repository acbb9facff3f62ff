"""The vocabulary of imagesearch.synthetic, translated by hand into de, fr, es, ru, zh and ar.

Forms are keyed by what the grammar needs: gender and number ("m", "f", "n", "pl", "mpl",
"fpl"), Russian's genitive plural after two and three ("gpl") and Arabic's dual ("dm", "df").
Non-human plurals take the feminine singular in Arabic, so "pl" is the "f" form there.
"""

from __future__ import annotations

# shape -> (gender, singular, plural); Russian's "plural" is the genitive singular that follows
# два/три, Arabic's is (dual, plural) joined by "|".
SHAPES: dict[str, dict[str, tuple[str, str, str]]] = {
    "de": {"circle": ("m", "Kreis", "Kreise"), "square": ("n", "Quadrat", "Quadrate"),
           "triangle": ("n", "Dreieck", "Dreiecke"), "star": ("m", "Stern", "Sterne"),
           "hexagon": ("n", "Sechseck", "Sechsecke"), "cross": ("n", "Kreuz", "Kreuze")},
    "fr": {"circle": ("m", "cercle", "cercles"), "square": ("m", "carré", "carrés"),
           "triangle": ("m", "triangle", "triangles"), "star": ("f", "étoile", "étoiles"),
           "hexagon": ("m", "hexagone", "hexagones"), "cross": ("f", "croix", "croix")},
    "es": {"circle": ("m", "círculo", "círculos"), "square": ("m", "cuadrado", "cuadrados"),
           "triangle": ("m", "triángulo", "triángulos"), "star": ("f", "estrella", "estrellas"),
           "hexagon": ("m", "hexágono", "hexágonos"), "cross": ("f", "cruz", "cruces")},
    "ru": {"circle": ("m", "круг", "круга"), "square": ("m", "квадрат", "квадрата"),
           "triangle": ("m", "треугольник", "треугольника"), "star": ("f", "звезда", "звезды"),
           "hexagon": ("m", "шестиугольник", "шестиугольника"), "cross": ("m", "крест", "креста")},
    "zh": {"circle": ("", "圆形", "圆形"), "square": ("", "正方形", "正方形"),
           "triangle": ("", "三角形", "三角形"), "star": ("", "星形", "星形"),
           "hexagon": ("", "六边形", "六边形"), "cross": ("", "十字形", "十字形")},
    "ar": {"circle": ("f", "دائرة", "دائرتان|دوائر"), "square": ("m", "مربع", "مربعان|مربعات"),
           "triangle": ("m", "مثلث", "مثلثان|مثلثات"), "star": ("f", "نجمة", "نجمتان|نجوم"),
           "hexagon": ("m", "مسدس", "مسدسان|مسدسات"), "cross": ("m", "صليب", "صليبان|صلبان")},
}


def _de(stem: str) -> dict[str, str]:
    return {"m": stem + "er", "n": stem + "es", "pl": stem + "e"}


def _same(word: str, plural: str | None = None) -> dict[str, str]:
    return {"m": word, "f": word, "mpl": plural or word, "fpl": plural or word}


def _romance(m: str, f: str, mpl: str, fpl: str) -> dict[str, str]:
    return {"m": m, "f": f, "mpl": mpl, "fpl": fpl}


def _ru(m: str, f: str, gpl: str) -> dict[str, str]:
    return {"m": m, "f": f, "gpl": gpl}


def _ar(m: str, f: str, dm: str, df: str) -> dict[str, str]:
    return {"m": m, "f": f, "pl": f, "dm": dm, "df": df}


# English word (colour or size) -> its forms in each language.
ADJECTIVES: dict[str, dict[str, dict[str, str]]] = {
    "de": {"red": _de("rot"), "green": _de("grün"), "blue": _de("blau"), "yellow": _de("gelb"),
           "orange": _de("orangefarben"), "purple": _de("violett"),
           "pink": {"m": "rosa", "n": "rosa", "pl": "rosa"}, "brown": _de("braun"),
           "small": _de("klein"), "large": _de("groß")},
    "fr": {"red": _same("rouge", "rouges"), "green": _romance("vert", "verte", "verts", "vertes"),
           "blue": _romance("bleu", "bleue", "bleus", "bleues"),
           "yellow": _same("jaune", "jaunes"), "orange": _same("orange"),
           "purple": _romance("violet", "violette", "violets", "violettes"),
           "pink": _same("rose", "roses"), "brown": _same("marron"),
           "small": _romance("petit", "petite", "petits", "petites"),
           "large": _romance("grand", "grande", "grands", "grandes")},
    "es": {"red": _romance("rojo", "roja", "rojos", "rojas"), "green": _same("verde", "verdes"),
           "blue": _same("azul", "azules"),
           "yellow": _romance("amarillo", "amarilla", "amarillos", "amarillas"),
           "orange": _same("naranja", "naranjas"),
           "purple": _romance("morado", "morada", "morados", "moradas"),
           "pink": _same("rosa", "rosas"), "brown": _same("marrón", "marrones"),
           "small": _romance("pequeño", "pequeña", "pequeños", "pequeñas"),
           "large": _same("grande", "grandes")},
    "ru": {"red": _ru("красный", "красная", "красных"), "green": _ru("зелёный", "зелёная",
                                                                     "зелёных"),
           "blue": _ru("синий", "синяя", "синих"), "yellow": _ru("жёлтый", "жёлтая", "жёлтых"),
           "orange": _ru("оранжевый", "оранжевая", "оранжевых"),
           "purple": _ru("фиолетовый", "фиолетовая", "фиолетовых"),
           "pink": _ru("розовый", "розовая", "розовых"),
           "brown": _ru("коричневый", "коричневая", "коричневых"),
           "small": _ru("маленький", "маленькая", "маленьких"),
           "large": _ru("большой", "большая", "больших")},
    "zh": {word: {"": zh} for word, zh in {
        "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "orange": "橙色",
        "purple": "紫色", "pink": "粉色", "brown": "棕色", "small": "小", "large": "大"}.items()},
    "ar": {"red": _ar("أحمر", "حمراء", "أحمران", "حمراوان"),
           "green": _ar("أخضر", "خضراء", "أخضران", "خضراوان"),
           "blue": _ar("أزرق", "زرقاء", "أزرقان", "زرقاوان"),
           "yellow": _ar("أصفر", "صفراء", "أصفران", "صفراوان"),
           "orange": _ar("برتقالي", "برتقالية", "برتقاليان", "برتقاليتان"),
           "purple": _ar("بنفسجي", "بنفسجية", "بنفسجيان", "بنفسجيتان"),
           "pink": _ar("وردي", "وردية", "ورديان", "ورديتان"),
           "brown": _ar("بني", "بنية", "بنيان", "بنيتان"),
           "small": _ar("صغير", "صغيرة", "صغيران", "صغيرتان"),
           "large": _ar("كبير", "كبيرة", "كبيران", "كبيرتان")},
}

# Count words by count and noun gender ("*" for any gender).
COUNTS: dict[str, dict[tuple[int, str], str]] = {
    "de": {(1, "*"): "ein", (2, "*"): "zwei", (3, "*"): "drei"},
    "fr": {(1, "m"): "un", (1, "f"): "une", (2, "*"): "deux", (3, "*"): "trois"},
    "es": {(1, "m"): "un", (1, "f"): "una", (2, "*"): "dos", (3, "*"): "tres"},
    "ru": {(1, "*"): "", (2, "m"): "два", (2, "f"): "две", (3, "*"): "три"},
    "zh": {(1, "*"): "一个", (2, "*"): "两个", (3, "*"): "三个"},
    "ar": {(1, "*"): "", (2, "*"): "", (3, "m"): "ثلاثة", (3, "f"): "ثلاث"},
}

POSITIONS: dict[str, dict[str, str]] = {
    "de": {"left": "links", "right": "rechts", "top": "oben", "bottom": "unten"},
    "fr": {"left": "à gauche", "right": "à droite", "top": "en haut", "bottom": "en bas"},
    "es": {"left": "a la izquierda", "right": "a la derecha", "top": "arriba",
           "bottom": "abajo"},
    "ru": {"left": "слева", "right": "справа", "top": "сверху", "bottom": "снизу"},
    "zh": {"left": "在左边", "right": "在右边", "top": "在上方", "bottom": "在下方"},
    "ar": {"left": "على اليسار", "right": "على اليمين", "top": "في الأعلى",
           "bottom": "في الأسفل"},
}

BACKGROUNDS: dict[str, dict[str, str]] = {
    "de": {"white": "auf weißem Hintergrund", "gray": "auf grauem Hintergrund",
           "dark": "auf dunklem Hintergrund"},
    "fr": {"white": "sur fond blanc", "gray": "sur fond gris", "dark": "sur fond sombre"},
    "es": {"white": "sobre fondo blanco", "gray": "sobre fondo gris",
           "dark": "sobre fondo oscuro"},
    "ru": {"white": "на белом фоне", "gray": "на сером фоне", "dark": "на тёмном фоне"},
    "zh": {"white": "白色背景", "gray": "灰色背景", "dark": "深色背景"},
    "ar": {"white": "على خلفية بيضاء", "gray": "على خلفية رمادية", "dark": "على خلفية داكنة"},
}

# "a photo of ..." and its like; every language has three, in the same order as English's.
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "en": ("{}", "a photo of {}", "an image of {}"),
    "de": ("{}", "Foto: {}", "ein Bild: {}"),
    "fr": ("{}", "une photo de {}", "une image de {}"),
    "es": ("{}", "una foto de {}", "una imagen de {}"),
    "ru": ("{}", "на фото {}", "на картинке {}"),
    "zh": ("{}", "一张{}的照片", "{}的图片"),
    "ar": ("{}", "صورة {}", "صورة تظهر {}"),
}
