"""The copy signal and its verification, tried on real photos and on what breaks parsers.

The edits are the evaluation's reported set (bench/copy_data.py REPORT), not the tuning set
the thresholds were chosen on; the distractors come from a seed the tuning never used.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench import copy_data
from imagesearch.copies import signal as signals
from imagesearch.copies.verify import compare, hamming

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return copy_data.photos()


@pytest.fixture(scope="module")
def originals(photos: dict[str, Image.Image]) -> dict[str, signals.CopySignal]:
    return {name: signals.compute(image) for name, image in photos.items()}


def test_encoding_round_trips(photos: dict[str, Image.Image]) -> None:
    signal = signals.compute(photos["astronaut"])
    data = signals.encode(signal)
    back = signals.decode(data)
    assert (back.width, back.height) == (signal.width, signal.height)
    assert back.phash == signal.phash and back.phash_mirrored == signal.phash_mirrored
    np.testing.assert_array_equal(back.thumbnail, signal.thumbnail)
    np.testing.assert_array_equal(back.descriptors, signal.descriptors)
    np.testing.assert_allclose(back.points, signal.points, atol=1 / 32)
    assert signals.perceptual_hash(data) == signal.phash
    assert 500 < len(signal.points) <= signals.MAX_KEYPOINTS
    assert len(data) < 40_000


@pytest.mark.parametrize("cut", [0, 2, 3, 10, 33, 34, 100, -1])
def test_a_truncated_signal_is_refused(photos: dict[str, Image.Image], cut: int) -> None:
    data = signals.encode(signals.compute(photos["coins"]))
    with pytest.raises(signals.SignalFormatError):
        signals.decode(data[:cut])


def test_another_version_is_refused_by_name(photos: dict[str, Image.Image]) -> None:
    data = bytearray(signals.encode(signals.compute(photos["coins"])))
    data[3] = signals.VERSION + 1
    with pytest.raises(signals.SignalFormatError, match="version"):
        signals.decode(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 40), st.integers(0, 40), st.integers(0, 20))
def test_arbitrary_bytes_never_crash_the_decoder(tail: bytes, thumb_w: int, thumb_h: int,
                                                 count: int) -> None:
    header = struct.pack("<3sBHH8s8sBBH", b"ISC", 1, 10, 10, b"\0" * 8, b"\0" * 8,
                         thumb_w, thumb_h, count)
    for data in (tail, header + tail):
        try:
            decoded = signals.decode(data)
        except signals.SignalFormatError:
            continue
        assert decoded.thumbnail.shape == (thumb_h, thumb_w)
        assert decoded.descriptors.shape == (count, 32)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 700), st.integers(2, 700), st.integers(0, 2**32 - 1),
       st.sampled_from(["L", "RGB", "RGBA", "P", "1"]))
@example(2, 2, 20437, "L")
@example(15, 15, 680, "P")  # ORB returned 769 keypoints for 768 asked
@example(482, 137, 2, "1")  # a flat grey dithered to sparse dots: spread 255, no structure
def test_any_image_gets_a_signal_that_compares(width: int, height: int, seed: int,
                                               mode: str) -> None:
    """Tiny, flat, extreme aspect ratios, every mode: a signal that encodes, decodes, and
    compares with itself without error."""
    rng = np.random.default_rng(seed)
    flat = rng.random() < 0.3
    pixels = (np.full((height, width, 3), rng.integers(0, 256), np.uint8) if flat
              else rng.integers(0, 256, (height, width, 3), np.uint8))
    image = Image.fromarray(pixels).convert(mode)
    spread = int(np.ptp(np.asarray(image.convert("L"))))  # mode "1" dithers
    signal = signals.decode(signals.encode(signals.compute(image)))
    assert max(signal.width, signal.height) == signals.NORMALISED_SIDE
    evidence = compare(signal, signal)
    assert evidence.hash_distance == 0
    if spread == 0:  # a flat image carries no evidence either way
        assert not evidence.is_copy
    # Strips blur to flat thumbnails, a few pixels a few grey levels apart (a 2x2 image
    # within 22 levels, found by this test) scale up to a gradient too plain to tell, and a
    # flat grey dithered to 1 bit is even dots (found by this test): all carry no evidence.
    # Identical bytes are EXACT in the service whatever their signal.
    elif not flat and max(width, height) <= 4 * min(width, height) and spread >= 64:
        assert evidence.is_copy


@pytest.mark.parametrize("edit", sorted(copy_data.REPORT))
def test_every_edit_of_every_photo_is_a_copy(photos: dict[str, Image.Image],
                                             originals: dict[str, signals.CopySignal],
                                             edit: str) -> None:
    rng = random.Random(f"test-{edit}")
    missed = []
    for name, image in photos.items():
        copied = copy_data.REPORT[edit](image, rng)
        evidence = compare(signals.compute(copied), originals[name])
        if not evidence.is_copy:
            missed.append((name, evidence))
    # Measured: none missed (bench/RESULTS.md); one in 19 leaves room for platform rounding.
    assert len(missed) <= 1, missed


def test_no_photo_or_drawing_is_a_copy_of_another(
        originals: dict[str, signals.CopySignal]) -> None:
    rng = random.Random("test-distractors")
    distractors = [signals.compute(copy_data.distractor(rng)) for _ in range(40)]
    false = []
    for name, signal in originals.items():
        others = [s for other, s in originals.items() if other != name] + distractors
        false += [(name, e) for e in map(lambda o: compare(signal, o), others) if e.is_copy]
    assert not false


def test_a_mirror_image_is_reported_as_one(photos: dict[str, Image.Image],
                                           originals: dict[str, signals.CopySignal]) -> None:
    mirrored = signals.compute(photos["rocket"].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    evidence = compare(mirrored, originals["rocket"])
    assert evidence.is_copy and evidence.mirrored
    assert evidence.hash_distance <= 6
    assert hamming(mirrored.phash, originals["rocket"].phash) > evidence.hash_distance


def test_drawings_of_different_things_are_not_copies_but_their_copies_are() -> None:
    """Plain images (few keypoints) are judged on their aligned intensities: a drawing is a
    copy of itself trimmed, resized and recompressed, never of another drawing. (Colour is
    no evidence: grey levels are compared, so a recoloured drawing is a copy.)"""
    from imagesearch import synthetic

    rng = random.Random(8)
    scenes = [synthetic.Scene(colour, shape, 1, "large", "center", background)
              for colour, shape, background in [
                  ("red", "star", "white"), ("blue", "hexagon", "dark"),
                  ("yellow", "cross", "gray"), ("green", "circle", "white"),
                  ("purple", "square", "white"), ("orange", "triangle", "white"),
                  ("red", "star", "dark"), ("blue", "circle", "gray")]]
    drawings = [synthetic.render(scene, 128, rng) for scene in scenes]
    originals = [signals.compute(d) for d in drawings]
    for index, drawing in enumerate(drawings):
        trimmed = drawing.crop((4, 4, 124, 124)).resize((100, 100))
        copy = signals.compute(copy_data._jpeg(70)(trimmed, rng))
        verdicts = [compare(copy, original).is_copy for original in originals]
        assert verdicts == [i == index for i in range(len(originals))], (scenes[index],
                                                                         verdicts)


@pytest.mark.parametrize("edit", ["pad", "watermark"])
def test_different_photos_sharing_a_frame_or_a_watermark_are_not_copies(
        photos: dict[str, Image.Image], edit: str) -> None:
    """What screenshots from one application, or one agency's stock photos, have in common
    is not the picture."""
    rng = random.Random(f"shared-{edit}")
    edited = {name: signals.compute(copy_data.REPORT[edit](image, rng))
              for name, image in photos.items()}
    names = sorted(edited)
    false = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if compare(edited[a], edited[b]).is_copy]
    assert not false


def test_transparency_counts_as_white_as_it_does_for_the_embedding(
        photos: dict[str, Image.Image]) -> None:
    photo = photos["coffee"].convert("RGBA")
    mask = Image.new("L", photo.size, 0)
    from PIL import ImageDraw

    ImageDraw.Draw(mask).ellipse((40, 40, photo.width - 40, photo.height - 40), fill=255)
    sticker = photo.copy()
    sticker.putalpha(mask)
    on_white = Image.new("RGB", photo.size, "white")
    on_white.paste(photo.convert("RGB"), mask=mask)
    flattened = copy_data._jpeg(85)(on_white, random.Random(0))
    assert compare(signals.compute(flattened), signals.compute(sticker)).is_copy
    invisible = photo.copy()
    invisible.putalpha(0)  # displays as blank white
    assert not compare(signals.compute(invisible), signals.compute(photo)).is_copy


@pytest.mark.parametrize("mode", ["F", "F255", "I;16", "I"])
def test_float_and_16_bit_pictures_are_copies_of_their_8_bit_selves(
        photos: dict[str, Image.Image], mode: str) -> None:
    # Pillow's convert("L") clips a 0..1 float picture to black: the signal found no feature.
    grey = photos["astronaut"].convert("L")
    values = np.asarray(grey, dtype=np.float64)
    deep = {"F": Image.fromarray((values / 255).astype(np.float32)),
            "F255": Image.fromarray(values.astype(np.float32)),
            "I;16": Image.fromarray((values * 257).astype(np.uint16)),
            "I": Image.fromarray((values * 257).astype(np.int32))}[mode]
    assert deep.mode == mode.removesuffix("255")
    signal = signals.compute(deep)
    assert len(signal.points) > 500
    assert compare(signal, signals.compute(grey)).is_copy


@pytest.mark.parametrize(("wide", "high", "grey"), [(1.0, 1.0, 0), (1.6, 1.5, 30),
                                                    (3.0, 2.5, 240), (1.0, 4.0, 128)])
def test_features_are_found_on_the_picture_inside_a_frame(
        photos: dict[str, Image.Image], originals: dict[str, signals.CopySignal],
        wide: float, high: float, grey: int) -> None:
    """Features are detected inside any uniform frame (at the picture's own scale, however
    deep the frame) and placed in the whole image's normalised pixels, where the picture is:
    a photo shown small in a big window is still verified as its copy."""
    photo = photos["astronaut"]
    frame = Image.new("RGB", (int(photo.width * wide), int(photo.height * high)), (grey,) * 3)
    left, top = (frame.width - photo.width) // 3, (frame.height - photo.height) // 2
    frame.paste(photo, (left, top))
    signal = signals.compute(frame)
    scale = signals.NORMALISED_SIDE / max(frame.size)
    inside = ((signal.points[:, 0] >= left * scale - 1)
              & (signal.points[:, 0] <= (left + photo.width) * scale + 1)
              & (signal.points[:, 1] >= top * scale - 1)
              & (signal.points[:, 1] <= (top + photo.height) * scale + 1))
    assert len(signal.points) > 300 and inside.all()
    evidence = compare(signal, originals["astronaut"])
    assert evidence.is_copy and evidence.inliers >= 30, evidence


@pytest.mark.parametrize("data", [None, 7, "ISC", [1, 2]])
def test_what_is_not_bytes_is_not_a_signal(data: object) -> None:
    with pytest.raises(signals.SignalFormatError):
        signals.decode(data)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_two_crops_that_merely_overlap_are_not_copies(photos: dict[str, Image.Image],
                                                      name: str) -> None:
    """Panning across one photo: a third of each crop is shared, neither is a copy of the
    other (an edited copy lies inside the image it copies)."""
    image = photos[name]
    left = image.crop((0, 0, int(image.width * 0.6), image.height))
    right = image.crop((int(image.width * 0.4), 0, image.width, image.height))
    assert not compare(signals.compute(left), signals.compute(right)).is_copy
    assert compare(signals.compute(left), signals.compute(image)).is_copy


def test_the_verdict_does_not_depend_on_which_image_asks(
        photos: dict[str, Image.Image], originals: dict[str, signals.CopySignal]) -> None:
    rng = random.Random("both-ways")
    for name in ("brick", "rocket", "microaneurysms"):
        for edit in ("pad", "crop20", "rotate5"):
            copy = signals.compute(copy_data.REPORT[edit](photos[name], rng))
            assert compare(copy, originals[name]).is_copy, (name, edit)
            assert compare(originals[name], copy).is_copy, (name, edit)
