"""Image preprocessing: parity with open_clip's transform, every input mode, every rejection."""

from __future__ import annotations

import io

import numpy as np
import pytest
from open_clip.transform import image_transform
from PIL import Image

from embedder_service.bundle import ImageConfig
from embedder_service.preprocess import ImageLimits, ImagePreprocessor, ImageRejected, Rejection
from tests.conftest import encode

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
CONFIG = ImageConfig(size=224, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def reference():
    return image_transform(224, is_train=False, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def ours() -> ImagePreprocessor:
    return ImagePreprocessor(CONFIG, ImageLimits(min_side=8), jpeg_draft=False)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def _variants(photo: Image.Image) -> dict[str, bytes]:
    return {
        "png": encode(photo), "jpeg": encode(photo, "JPEG", quality=90),
        "palette": encode(photo.convert("P", palette=Image.Palette.ADAPTIVE)),
        "gif": encode(photo, "GIF"), "gray": encode(photo.convert("L")),
        "cmyk": encode(photo.convert("CMYK"), "JPEG"), "tiff": encode(photo, "TIFF"),
        "bmp": encode(photo.resize((301, 199)), "BMP"),
        "tall": encode(photo.resize((37, 900))), "wide": encode(photo.resize((1001, 233)), "WEBP",
                                                                lossless=True),
    }


def test_pixels_match_open_clip_for_every_format_and_mode(photos, reference, ours):
    for name in ("astronaut", "chelsea", "rocket"):
        for variant, data in _variants(photos[name]).items():
            expected = reference(Image.open(io.BytesIO(data))).numpy()
            actual = ours(data)
            assert actual.shape == (3, 224, 224) and actual.dtype == np.float32
            # Identical up to one 8-bit level in a few edge pixels of non-square crops.
            assert np.abs(expected - actual).max() < 0.031, (name, variant)
            assert _cosine(expected, actual) > 0.99995, (name, variant)


def test_crop_box_resize_equals_resize_then_centre_crop(photos, ours):
    photo = photos["coffee"].resize((640, 401))
    full = photo.resize((357, 224), Image.Resampling.BICUBIC)
    left = round((357 - 224) / 2)
    cropped = full.crop((left, 0, left + 224, 224))
    expected = np.asarray(cropped, dtype=np.float32)
    actual = ours.from_image(photo).transpose(1, 2, 0) * np.asarray(STD) + np.asarray(MEAN)
    assert np.abs(actual * 255 - expected).max() < 1.01


def test_extreme_aspect_ratio_costs_no_more_than_a_square(ours):
    sliver = Image.new("RGB", (8, 60000), (200, 30, 30))
    assert ours(encode(sliver)).shape == (3, 224, 224)


def test_transparent_pixels_become_white():
    pre = ImagePreprocessor(ImageConfig(size=16, mean=(0, 0, 0), std=(1, 1, 1)), ImageLimits())
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert np.allclose(pre(encode(clear)), 1.0)
    half = Image.new("LA", (32, 32), (0, 128))
    assert np.allclose(pre(encode(half)), 127 / 255, atol=1 / 255)
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert np.allclose(pre(encode(palette)), 1.0)


def test_sixteen_bit_gray_uses_its_full_range():
    pre = ImagePreprocessor(ImageConfig(size=16, mean=(0, 0, 0), std=(1, 1, 1)), ImageLimits())
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    pixels = pre(encode(image))
    assert pixels.min() < 0.05 and pixels.max() > 0.95


def test_animation_uses_its_first_frame():
    pre = ImagePreprocessor(ImageConfig(size=16, mean=(0, 0, 0), std=(1, 1, 1)), ImageLimits())
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixels = pre(buffer.getvalue())
    assert pixels[0].mean() > 0.9 and pixels[2].mean() < 0.1


def test_jpeg_draft_decoding_stays_within_the_parity_bound(photos, reference):
    big = photos["astronaut"].resize((4000, 3000), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=92)
    drafted = ImagePreprocessor(CONFIG, ImageLimits(), jpeg_draft=True)(data)
    expected = reference(Image.open(io.BytesIO(data))).numpy()
    assert _cosine(expected, drafted) > 0.999


@pytest.mark.parametrize(("data", "reason", "message"), [
    (b"", Rejection.EMPTY, "image has zero bytes"),
    (b"GIF89a" + b"\x00" * 3, Rejection.NOT_AN_IMAGE, "bytes are not an image"),
    (b"%PDF-1.4 not an image", Rejection.NOT_AN_IMAGE, "bytes are not an image in a supported"),
    (encode(Image.new("RGB", (1, 1))), Rejection.TOO_SMALL,
     "image is 1x1 pixels; each side must be at least 8"),
    (encode(Image.new("RGB", (4, 100))), Rejection.TOO_SMALL, "image is 4x100 pixels"),
    (encode(Image.new("RGB", (64, 64)), "ICO"), Rejection.NOT_AN_IMAGE,
     "bytes are not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"),
])
def test_bad_bytes_are_rejected_with_a_reason(ours, data, reason, message):
    with pytest.raises(ImageRejected) as caught:
        ours(data)
    assert caught.value.reason is reason
    assert str(caught.value).startswith(message)


def test_truncated_jpeg_is_corrupt(photos, ours):
    data = encode(photos["astronaut"], "JPEG")
    with pytest.raises(ImageRejected) as caught:
        ours(data[: len(data) // 3])
    assert caught.value.reason is Rejection.CORRUPT
    assert str(caught.value).startswith("JPEG image is truncated or corrupt")


def test_limits_are_checked_before_decoding():
    pre = ImagePreprocessor(CONFIG, ImageLimits(max_bytes=10_000_000, max_pixels=1_000_000))
    # A 20000 x 20000 PNG of one colour: 0.4 MB on the wire, 400 MB decoded.
    bomb = encode(Image.new("L", (20000, 20000)), "PNG", optimize=True)
    with pytest.raises(ImageRejected) as caught:
        pre(bomb)
    assert caught.value.reason is Rejection.TOO_MANY_PIXELS
    assert str(caught.value) == "image is 400000000 pixels; the limit is 1000000 pixels"
    # Over our limit but under Pillow's own: rejected from the header, with its size.
    with pytest.raises(ImageRejected) as caught:
        pre(encode(Image.new("L", (1001, 1000))))
    assert str(caught.value) == "image is 1001x1000 pixels; the limit is 1000000 pixels"
    small = ImagePreprocessor(CONFIG, ImageLimits(max_bytes=10_000))
    with pytest.raises(ImageRejected) as caught:
        small(b"\xff\xd8" + b"\x00" * 20_000)
    assert caught.value.reason is Rejection.TOO_MANY_BYTES
    assert str(caught.value) == "image is 20002 bytes; the limit is 10000"
