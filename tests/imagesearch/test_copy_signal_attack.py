"""Hostile probes of the copy signal's features detected on the framed picture (ORB on the
picture inside any frame `_picture_box` finds, at ORB_SIDE=320 px, points mapped back into the
512 px normalised image), written by an outside review of commit 38e0a9d.

The signal before that commit (e077475, features on the whole image at 512 px) is kept beside
these tests as `_copy_signal_e077475.py`, so that each probe of a copy shows that the old
signal handled the same pair. The review found five bugs (a caption written on the frame, a
mat inside a thin line, tiny pictures zoomed into alike edges, and two kinds of copy lost to
the smaller side); the first three are fixed, and the last two are probed at the boundary the
smaller side keeps (bench/RESULTS.md records what lies beyond it). None of the edits are
copy_data's REPORT or TUNING edits.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench import copy_data
from imagesearch.copies import signal as signals
from imagesearch.copies.verify import compare
from tests.imagesearch import _copy_signal_e077475 as old_signals

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return copy_data.photos()


def framed(picture: Image.Image, wide: float, high: float, colour: tuple[int, int, int],
           at: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    frame = Image.new("RGB", (int(picture.width * wide), int(picture.height * high)), colour)
    frame.paste(picture, (int((frame.width - picture.width) * at[0]),
                          int((frame.height - picture.height) * at[1])))
    return frame


def captioned(image: Image.Image, text: str = "shop.example.com") -> Image.Image:
    """A shop's name written into the top left corner (of the frame, here)."""
    marked = image.copy()
    ImageDraw.Draw(marked).text((image.width * 0.02, image.height * 0.02), text,
                                fill=(0, 0, 0), font_size=max(10, image.height // 20))
    return marked


def matted(picture: Image.Image, deep: float) -> Image.Image:
    """A passe-partout (cream mat) with a thin dark line round its outer edge."""
    frame = framed(picture, deep, deep, (235, 230, 220))
    ImageDraw.Draw(frame).rectangle((0, 0, frame.width - 1, frame.height - 1),
                                    outline=(20, 20, 20), width=6)
    return frame


def gradient_framed(picture: Image.Image, deep: float) -> Image.Image:
    """The picture on a left-to-right grey gradient (a studio backdrop, a vignette)."""
    width, height = int(picture.width * deep), int(picture.height * deep)
    ramp = np.linspace(40, 200, width)[None, :, None] * np.ones((height, 1, 3))
    frame = Image.fromarray(ramp.astype(np.uint8))
    frame.paste(picture, ((width - picture.width) // 2, (height - picture.height) // 2))
    return frame


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def old_is_copy(a: Image.Image, b: Image.Image) -> bool:
    return compare(old_signals.compute(a), old_signals.compute(b)).is_copy


# --- Copies the previous signal verified ------------------------------------------------------


@pytest.mark.parametrize(("name", "deep"), [("rocket", 4.0), ("horse", 4.0), ("chelsea", 5.0),
                                            ("coffee", 5.0)])
def test_a_caption_written_into_the_frame_keeps_a_framed_picture_a_copy(
        photos: dict[str, Image.Image], name: str, deep: float) -> None:
    """An image that is a small picture on a big white ground (a product shot, a photo shown
    small in a page), and its copy with a shop's name written in the white corner. Found
    bug: the caption made the copy's frame not uniform, so its features were detected on the
    whole image at 320 px, the picture 4-5x smaller than in the original, beyond ORB's
    pyramid; a row or column is now frame when 90% of it is the frame's colour."""
    original = framed(photos[name], deep, deep, (255, 255, 255))
    copy = captioned(original)
    assert old_is_copy(original, copy)
    evidence = compare(signals.compute(original), signals.compute(copy))
    assert evidence.is_copy, evidence


@pytest.mark.parametrize("name", ["chelsea", "coffee", "horse"])
def test_a_picture_in_a_mat_with_an_outer_line_is_a_copy(
        photos: dict[str, Image.Image], name: str) -> None:
    """The photo in a passe-partout three times its size whose outer edge has a thin dark
    line. Found bug: the line blurs into the thumbnail's corners, which gave the frame's
    colour, so no frame was found; now the edges' commonest colour is the frame's, and a
    frame inside a frame is stripped too."""
    photo = photos[name]
    copy = matted(photo, 3.0)
    assert old_is_copy(photo, copy)
    evidence = compare(signals.compute(photo), signals.compute(copy))
    assert evidence.is_copy, evidence


@pytest.mark.parametrize(("name", "deep"), [("chelsea", 2.0), ("coffee", 2.0), ("horse", 2.0)])
def test_a_picture_on_a_gradient_ground_is_a_copy(
        photos: dict[str, Image.Image], name: str, deep: float) -> None:
    """A frame that is not one colour (a gradient) is not stripped, so the features come
    from the whole image at 320 px. Found by the review: at 3x the photo's size the old
    signal (512 px) verified chelsea and coffee and this one does not; at 2x both verify
    7 of 8 photos (bench/RESULTS.md). This is the boundary kept."""
    photo = photos[name]
    copy = gradient_framed(photo, deep)
    assert old_is_copy(photo, copy)
    evidence = compare(signals.compute(photo), signals.compute(copy))
    assert evidence.is_copy, evidence


@pytest.mark.parametrize("name", ["chelsea", "rocket", "horse"])
def test_a_centre_crop_of_three_fifths_each_side_is_a_copy(
        photos: dict[str, Image.Image], name: str) -> None:
    """A harder edit than REPORT's crop20: the middle 60% of each side. Found by the review:
    keeping half of each side, the old signal (512 px) verified 8 of 8 photos and this one
    4 (the crop is 160 px wide in the original's 320); at 60% both verify all 8. This is the
    boundary kept."""
    photo = photos[name]
    w, h = photo.size
    crop = photo.crop((w // 5, h // 5, w * 4 // 5, h * 4 // 5))
    assert old_is_copy(photo, crop)
    evidence = compare(signals.compute(photo), signals.compute(crop))
    assert evidence.is_copy, evidence


# --- Different pictures --------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [("brick", "moon"), ("gravel", "moon"),
                                      ("brick", "microaneurysms"), ("grass", "text"),
                                      ("camera", "horse")])
def test_different_thumbnails_in_one_big_black_frame_are_not_copies(
        photos: dict[str, Image.Image], a: str, b: str) -> None:
    """Two different photos shown as 24 px icons at the same place of a 1200 x 900 black
    window. Found bug (false positive): the picture was zoomed ~10x to 320 px, and ORB found
    dozens of corners along the icon's edge against the black, the same in both (18 of 90
    such pairs called copies); the picture is now enlarged at most 2x."""
    windows = []
    for name in (a, b):
        window = Image.new("RGB", (1200, 900), (0, 0, 0))
        window.paste(photos[name].resize((24, 24)), (500, 400))
        windows.append(window)
    assert not old_is_copy(*windows)
    evidence = compare(signals.compute(windows[0]), signals.compute(windows[1]))
    assert not evidence.is_copy, evidence


# --- Attacks that held ---------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [("astronaut", "chelsea"), ("coffee", "rocket"),
                                      ("camera", "coins"), ("clock", "page")])
@pytest.mark.parametrize(("wide_a", "wide_b", "colour"), [(1.3, 2.0, (0, 0, 0)),
                                                          (1.5, 3.0, (255, 255, 255)),
                                                          (1.1, 1.8, (30, 30, 34))])
def test_different_photos_in_frames_of_different_depths_are_not_copies(
        photos: dict[str, Image.Image], a: str, b: str, wide_a: float, wide_b: float,
        colour: tuple[int, int, int]) -> None:
    """Held: stripped of frames of different depths, two different 4:3 photos are scaled to
    the same 320 px rectangle, but its four corners are not enough to be called copies."""
    first = framed(photos[a].resize((400, 300)), wide_a, wide_a, colour)
    second = framed(photos[b].resize((400, 300)), wide_b, wide_b, colour)
    assert not compare(signals.compute(first), signals.compute(second)).is_copy


@pytest.mark.parametrize(("a", "b"), [("astronaut", "chelsea"), ("coffee", "rocket"),
                                      ("camera", "coins"), ("page", "astronaut")])
def test_letterboxed_stills_of_different_pictures_are_not_copies(
        photos: dict[str, Image.Image], a: str, b: str) -> None:
    """Held: 2.39:1 pictures in 16:9 black bars."""
    stills = []
    for name in (a, b):
        still = Image.new("RGB", (1280, 720))
        still.paste(photos[name].resize((1280, 536)), (0, 92))
        stills.append(still)
    assert not compare(signals.compute(stills[0]), signals.compute(stills[1])).is_copy


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])
def test_noisy_one_sided_and_jpeg_frames_still_verify(
        photos: dict[str, Image.Image], name: str) -> None:
    """Held (and better than before): a frame of JPEG noise at quality 15, a frame of
    Gaussian noise (sd 20, averaged flat on the thumbnail), a black bar on one side only."""
    photo = photos[name]
    original = signals.compute(photo)
    noisy = np.asarray(framed(photo, 3.0, 3.0, (128, 128, 128))).astype(float)
    mask = np.ones((*noisy.shape[:2], 1))
    left, top = (noisy.shape[1] - photo.width) // 2, (noisy.shape[0] - photo.height) // 2
    mask[top:top + photo.height, left:left + photo.width] = 0
    noisy += mask * np.random.default_rng(3).normal(0, 20, noisy.shape)
    for copy in (jpeg(framed(photo, 3.0, 3.0, (30, 30, 34)), 15),
                 Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)),
                 framed(photo, 1.0, 1.6, (0, 0, 0), at=(0, 0))):
        evidence = compare(original, signals.compute(copy))
        assert evidence.is_copy, evidence


def _picture_corner(size: tuple[int, int], at: tuple[int, int], side: int,
                    ground: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", size, ground)
    image.paste(Image.fromarray(np.random.default_rng(side).integers(
        0, 256, (side, side, 3), dtype=np.uint8)), at)
    return image


def _degenerate_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    images = []
    for width, height in [(1, 1), (1, 7), (7, 1), (2, 2000), (2000, 3), (5000, 1), (63, 65),
                          (64, 1), (1, 64), (3, 3), (65535, 2)]:
        images.append(Image.new("RGB", (width, height), (10, 20, 30)))
        images.append(Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)))
    one = Image.new("RGB", (1000, 800), (255, 255, 255))
    one.putpixel((500, 400), (0, 0, 0))
    images.append(one)
    images.append(_picture_corner((1000, 800), (995, 795), 5, (0, 0, 0)))
    images.append(_picture_corner((1000, 800), (0, 0), 5, (0, 0, 0)))
    images.append(_picture_corner((4000, 40), (3960, 5), 30, (0, 0, 0)))
    images.append(_picture_corner((1000, 800), (200, 400), 2, (255, 255, 255)))
    strip = Image.new("RGB", (1000, 800), (255, 255, 255))
    strip.paste(Image.fromarray(rng.integers(0, 256, (600, 2, 3), np.uint8)), (500, 100))
    images.append(strip)
    images.append(Image.new("RGBA", (300, 200), (0, 0, 0, 0)))
    return images


def test_degenerate_images_give_signals_with_points_inside_the_image() -> None:
    """Held: no crash on strips, one-pixel content, all-frame images, content in a corner;
    every point lies in the normalised image and survives the encoding."""
    for image in _degenerate_images():
        signal = signals.compute(image)
        scale = signals.NORMALISED_SIDE / max(image.size)
        width = max(1, round(image.width * scale))
        height = max(1, round(image.height * scale))
        points = signal.points
        assert ((points >= 0).all() and (points[:, 0] <= width - 0.5).all()
                and (points[:, 1] <= height - 0.5).all()), (image.size, points.max(axis=0))
        back = signals.decode(signals.encode(signal))
        np.testing.assert_allclose(back.points, points, atol=1 / 32)


# Not rocket (nor horse): their small captioned picture, stripped and enlarged 2x now, finds
# 4-5 inliers against the old signal's 128 px picture (old against old: 359-713).
@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_old_stored_signals_still_verify_new_queries(
        photos: dict[str, Image.Image], name: str) -> None:
    """Held: a signal stored by e077475 against one computed now, for edits of my own (a deep
    grey frame, a 15% crop, a caption in a small picture's frame)."""
    photo = photos[name]
    w, h = photo.size
    stored = old_signals.compute(photo)
    for copy in (framed(photo, 2.2, 2.0, (90, 90, 90), at=(0.2, 0.7)),
                 photo.crop((w * 15 // 100, h // 10, w, h * 95 // 100))):
        assert compare(signals.compute(copy), stored).is_copy
    small = framed(photo, 4.0, 4.0, (255, 255, 255))
    assert compare(signals.compute(captioned(small)), old_signals.compute(small)).is_copy
