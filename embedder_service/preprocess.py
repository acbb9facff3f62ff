"""CLIP image preprocessing in Pillow and numpy, matching open_clip's eval transform.

open_clip does: Resize(shortest side, bicubic) -> CenterCrop -> convert("RGB") -> ToTensor ->
Normalize, with torchvision running Pillow's own resize on PIL images. We compute the same
pixels with one Pillow call: `resize(box=...)` over just the region the centre crop keeps. Pillow
places the filter taps from the box's coordinates in the source, so the output is identical to
resize-then-crop, while work and memory stay bounded by the output size (a 2 x 60000 strip
would otherwise be resized to 224 x 6.7 million pixels first).

Decoding is hardened: size and pixel limits are checked from the header before any pixel is
decoded, only the formats we document are opened, and large JPEGs decode at a reduced DCT scale
(draft mode) that stays at least `draft_margin` times the output size.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedder_service.bundle import ImageConfig
from imagesearch.copies import signal as signals
from imagesearch.image_modes import resizable

# Pillow plugin ids (JPEG also opens multi-picture MPO files, BMP also DIB).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_NEAREST_MODES = frozenset({"1", "P"})
_WHITE = (255, 255, 255, 255)


class Rejection(Enum):
    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT = "corrupt"
    TOO_MANY_BYTES = "too_many_bytes"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"


class ImageRejected(Exception):
    """The bytes cannot be embedded; `reason` is machine-readable, the message is for callers."""

    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 100_000_000
    min_side: int = 2


@dataclass(frozen=True)
class Extras:
    """What a caller asks of an image beside its embedding, all made from the same decode."""

    copy_signal: bool = False
    thumbnail_side: int = 0  # the thumbnail's longest side (a JPEG to show); 0: none
    pixels_side: int = 0  # the normalised copy's longest side (a JPEG to re-embed); 0: none

    @property
    def wanted(self) -> bool:
        return bool(self.copy_signal or self.thumbnail_side or self.pixels_side)


NO_EXTRAS = Extras()


class ImagePreprocessor:
    """Turns encoded image bytes into a normalised float32 CHW array. Thread-safe."""

    def __init__(
        self,
        config: ImageConfig,
        limits: ImageLimits,
        *,
        jpeg_draft: bool = True,
        draft_margin: float = 2.0,
    ) -> None:
        self._size = config.size
        self._resample = _RESAMPLE[config.interpolation]
        std = np.asarray(config.std, dtype=np.float32)
        # (x / 255 - mean) / std folded into one multiply-add per value.
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-np.asarray(config.mean, dtype=np.float32) / std).astype(np.float32)
        self._limits = limits
        self._jpeg_draft = jpeg_draft
        self._draft_margin = draft_margin

    @property
    def limits(self) -> ImageLimits:
        return self._limits

    def __call__(self, data: bytes) -> np.ndarray:
        return self.prepare(data).pixels

    def prepare(self, data: bytes, extras: Extras = NO_EXTRAS) -> Prepared:
        """The model's input and, when asked, the image's encoded copy signal
        (imagesearch.copies) and JPEG copies, all from one decoding of the bytes."""
        return finish(self.decode(data, extras), extras)

    def decode(self, data: bytes, extras: Extras = NO_EXTRAS) -> Decoded:
        """The model's input, and the upright picture that `finish` makes `extras` from: the
        two halves of `prepare`, so that a server can run them on different threads."""
        image = self._open(data)
        try:
            return self._decoded(image, extras)
        finally:
            image.close()

    def _open(self, data: bytes) -> Image.Image:
        if not data:
            raise ImageRejected(Rejection.EMPTY, "image has zero bytes")
        if len(data) > self._limits.max_bytes:
            raise ImageRejected(
                Rejection.TOO_MANY_BYTES,
                f"image is {len(data)} bytes; the limit is {self._limits.max_bytes}",
            )
        try:
            # Only our formats' decoders are reachable: less attack surface than all of Pillow's.
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise ImageRejected(
                Rejection.NOT_AN_IMAGE,
                "bytes are not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)",
            ) from None
        except Image.DecompressionBombError as err:
            raise self._too_many_pixels(None, str(err)) from None
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageRejected(Rejection.CORRUPT, f"image header is corrupt: {err}") from None
        self._check_header(image)
        return image

    def _check_header(self, image: Image.Image) -> None:
        width, height = image.size
        if width * height > self._limits.max_pixels:
            image.close()
            raise self._too_many_pixels((width, height))
        if min(width, height) < self._limits.min_side:
            image.close()
            raise ImageRejected(
                Rejection.TOO_SMALL,
                f"image is {width}x{height} pixels; each side must be at least "
                f"{self._limits.min_side}",
            )

    def _too_many_pixels(self, size: tuple[int, int] | None, pillow_error: str = ""
                         ) -> ImageRejected:
        # Pillow refuses images far over its own limit while opening them, before we can read
        # the size; its message still carries the pixel count.
        counted = re.search(r"\((\d+) pixels\)", pillow_error)
        shown = (f"{size[0]}x{size[1]} pixels" if size
                 else f"{counted.group(1)} pixels" if counted else "too many pixels")
        return ImageRejected(
            Rejection.TOO_MANY_PIXELS,
            f"image is {shown}; the limit is {self._limits.max_pixels} pixels",
        )

    def from_image(self, image: Image.Image) -> np.ndarray:
        """Preprocesses an already decoded image (used by the trainer and tests)."""
        return self._normalise(self._resize_and_flatten(resizable(image)))

    def _decoded(self, image: Image.Image, extras: Extras) -> Decoded:
        try:
            self._maybe_draft(image, extras.pixels_side)
            image.load()
            upright = resizable(ImageOps.exif_transpose(image))
            upright.load()  # its own pixels: the file is closed before `finish` runs
            rgb = self._resize_and_flatten(upright)
        except Image.DecompressionBombError as err:
            raise self._too_many_pixels(None, str(err)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageRejected(
                Rejection.CORRUPT, f"{image.format} image is truncated or corrupt: {err}"
            ) from None
        return Decoded(self._normalise(rgb), upright if extras.wanted else None)

    def _normalise(self, rgb: Image.Image) -> np.ndarray:
        array = np.asarray(rgb, dtype=np.float32)
        array = array * self._scale + self._offset
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def _maybe_draft(self, image: Image.Image, copy_side: int = 0) -> None:
        """Lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the output stays large enough:
        the shorter side at least `draft_margin` times the model's input and, when a JPEG copy
        of `copy_side` pixels is asked for (ImageResult.pixels), the longer side at least that
        (so the copy is as sharp as a full decode would give)."""
        if not self._jpeg_draft or image.format not in ("JPEG", "MPO"):
            return
        factor = int(min(image.size) / (self._size * self._draft_margin))
        if copy_side:
            factor = min(factor, max(image.size) // copy_side)
        if factor >= 2:
            width, height = image.size
            image.draft(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))

    def _resize_and_flatten(self, image: Image.Image) -> Image.Image:
        # Resize first, in the image's own mode, as open_clip does: Pillow resizes palette
        # images with nearest-neighbour, so converting first would change the result.
        return _on_white(self._resize_crop(image))

    def _resize_crop(self, image: Image.Image) -> Image.Image:
        """torchvision's Resize(shortest side) + CenterCrop, computed on the kept region only."""
        width, height = image.size
        size = self._size
        # torchvision: the short side becomes `size`, the long one is truncated with int().
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        top = round((new_h - size) / 2.0)
        left = round((new_w - size) / 2.0)
        if image.mode in _NEAREST_MODES and new_w * new_h <= 4 * size * size:
            # Pillow resizes these modes nearest-neighbour, where the box's float offsets can
            # pick the neighbouring source pixel; resize-then-crop is exact and cheap here.
            full = image.resize((new_w, new_h), self._resample)
            return full.crop((left, top, left + size, top + size))
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return image.resize((size, size), self._resample, box=box)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)


@dataclass(frozen=True)
class Decoded:
    """One decoded image: the model's input, and the upright picture as decoded (a large JPEG
    at its draft scale) when extras were asked for."""

    pixels: np.ndarray
    upright: Image.Image | None = None


def finish(decoded: Decoded, extras: Extras) -> Prepared:
    """The extras asked of a decoded image: its copy signal (from the picture as decoded,
    whose shorter side stays at least 2x the model's input: ample for the signal) and JPEG
    copies. Thread-safe; ImageRejected if the pixels cannot be read."""
    upright = decoded.upright
    if upright is None or not extras.wanted:
        return Prepared(decoded.pixels)
    try:
        signal = signals.encode(signals.compute(upright)) if extras.copy_signal else None
        thumbnail = _jpeg_copy(upright, extras.thumbnail_side, THUMBNAIL_QUALITY)
        pixels = _jpeg_copy(upright, extras.pixels_side, PIXELS_QUALITY)
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageRejected(Rejection.CORRUPT, f"image is corrupt: {err}") from None
    return Prepared(decoded.pixels, signal, thumbnail, pixels)


@dataclass(frozen=True)
class Prepared:
    """One decoded image: the model's input, and what else was asked of it."""

    pixels: np.ndarray
    copy_signal: bytes | None = None
    thumbnail: bytes | None = None
    normalised_copy: bytes | None = None  # ImageResult.pixels


THUMBNAIL_QUALITY = 85
# The copy kept to embed the image again with another model: less loss than a thumbnail.
PIXELS_QUALITY = 90


def _jpeg_copy(image: Image.Image, side: int, quality: int) -> bytes | None:
    """A JPEG at most `side` pixels on its longer side (never enlarged), transparency on
    white as for the embedding; None when `side` is 0 (not asked for)."""
    if not side:
        return None
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    _on_white(copy).save(out, "JPEG", quality=quality)
    return out.getvalue()


def _on_white(image: Image.Image) -> Image.Image:
    """RGB, with transparent pixels composited onto white."""
    if not _has_alpha(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    flattened = Image.new("RGBA", rgba.size, _WHITE)
    flattened.alpha_composite(rgba)
    return flattened.convert("RGB")
