"""Pillow's exotic image modes brought to ones every consumer handles alike.

Both the embedder's preprocessing and the copy signal read decoded images of any mode; a float
("F") image's `convert("L")` clips 0..1 data to black and 16-bit data to white, so both convert
through here first and see the same picture."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Modes Pillow resizes natively; anything else is first converted to one of these.
RESIZABLE_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "LA", "CMYK"})


def resizable(image: Image.Image) -> Image.Image:
    """Brings exotic modes (16-bit, float, PA, YCbCr...) to a mode Pillow resizes natively."""
    if image.mode in RESIZABLE_MODES:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return eight_bit_grey(image)
    if image.mode == "PA":
        return image.convert("RGBA")
    return image.convert("RGB")


def eight_bit_grey(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        # Float images are conventionally in [0, 1]; anything larger is taken as 8-bit.
        scaled = values * 255.0 if values.max(initial=0.0) <= 1.0 else values
    else:
        # 16-bit data fills 0..65535; 65535 / 257 = 255 maps the full range onto 8 bits.
        scaled = values / 257.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
