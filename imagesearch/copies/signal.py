"""The copy signal: what is kept of an image to recognise its copies later, in ~30 KB.

- a 64-bit DCT perceptual hash of the image and of its mirror image (resize, recompression,
  colour shifts and horizontal flips keep it within a few bits);
- a grey thumbnail, 64 pixels on its longer side, for a photometric check once two images
  are aligned;
- up to 768 ORB keypoints and descriptors of the picture inside any frame of one colour (see
  `_picture_box`), contrast-equalised, 320 pixels on its longer side; their points in the
  pixels of the image normalised to 512 on its longer side (crops, padding, rotation and
  overlays keep enough of them for a geometric match).

Encoded as one versioned little-endian blob (see `encode`), opaque to callers: the layout may
change with the version, and a signal of another version compares as "no evidence".
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from imagesearch.image_modes import resizable

VERSION = 1
FORMAT = f"imagesearch-copy/{VERSION}"
MAGIC = b"ISC"
NORMALISED_SIDE = 512
ORB_SIDE = 320  # see `_keypoints`
THUMB_SIDE = 64
MAX_KEYPOINTS = 768
_HEADER = struct.Struct("<3sBHH8s8sBBH")
# The most an encoded signal takes: header, a full thumbnail, every keypoint (4 + 32 bytes).
MAX_ENCODED_BYTES = _HEADER.size + THUMB_SIDE * THUMB_SIDE + MAX_KEYPOINTS * 36
# FAST threshold 7 (OpenCV's default is 20) and CLAHE before detection: smooth photographs
# (retinas, skies) otherwise yield too few keypoints to verify a crop of them.
_ORB_FAST_THRESHOLD = 7
ORB_SCALE_FACTOR = 1.2
ORB_LEVELS = 8
_CLAHE_CLIP = 3.0
FRAME_TOLERANCE = 6  # grey levels, see `frameless`
FRAME_SHARE = 0.9  # see `_picture_box`
FRAME_PASSES = 3
MAX_PICTURE_ZOOM = 2.0  # see `_keypoints`
# ORB keeps 31 pixels clear of every border (its patch size).
_MIN_KEYPOINT_SIDE = 64


@dataclass(frozen=True)
class CopySignal:
    width: int
    height: int
    phash: bytes
    phash_mirrored: bytes
    thumbnail: np.ndarray  # uint8, THUMB_SIDE on the longer side, the image's aspect ratio
    points: np.ndarray  # (n, 2) float32, pixels of the normalised image
    descriptors: np.ndarray  # (n, 32) uint8

    @property
    def version(self) -> int:
        return VERSION


def compute(image: Image.Image) -> CopySignal:
    """The signal of a decoded image (any mode; transparent pixels count as white, as they
    do for the embedding). Thread-safe."""
    grey = _normalised_grey(_flattened(resizable(image)))
    height, width = grey.shape
    phash, mirrored = dct_hashes(grey)
    thumbnail = cv2.resize(grey, _thumbnail_size(width, height), interpolation=cv2.INTER_AREA)
    points, descriptors = _keypoints(grey, thumbnail)
    return CopySignal(width, height, phash, mirrored, thumbnail, points, descriptors)


def _flattened(image: Image.Image) -> Image.Image:
    """The image composited onto white, if it has transparency: a cut-out saved as a JPEG
    is the same picture, and the colours under fully transparent pixels are not."""
    if image.mode not in ("RGBA", "LA", "PA") and not (
            image.mode == "P" and "transparency" in image.info):
        return image
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    return white.convert("RGB")


def _normalised_grey(image: Image.Image) -> np.ndarray:
    grey = np.asarray(image.convert("L"))
    scale = NORMALISED_SIDE / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    # Small images are scaled up too: ORB's 31-pixel patches find nothing in a 100-pixel image.
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(grey, size, interpolation=method)


def _thumbnail_size(width: int, height: int) -> tuple[int, int]:
    scale = THUMB_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def dct_hashes(grey: np.ndarray) -> tuple[bytes, bytes]:
    """The 64-bit DCT perceptual hash of a grey image and of its mirror image."""
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    # Mirroring an image negates its odd horizontal frequencies: the mirror's hash for free.
    mirrored = low * np.where(np.arange(8) % 2 == 1, -1.0, 1.0)[None, :]
    return _bits(low), _bits(mirrored)


def _bits(low: np.ndarray) -> bytes:
    flat = low.flatten()
    return np.packbits(flat > np.median(flat[1:])).tobytes()


def frameless(thumbnail: np.ndarray) -> np.ndarray:
    """The thumbnail without a uniform frame: the rows and columns at its edges that are all
    within FRAME_TOLERANCE of the corners' colour (a screenshot's window, a mat, padding)."""
    top, bottom, left, right = _content_box(thumbnail)
    return thumbnail[top:bottom, left:right]


def _content_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """Top, bottom, left and right (exclusive) of what `frameless` keeps."""
    image = grey.astype(np.int16)
    corners = np.median([image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]])
    flat = np.abs(image - corners) <= FRAME_TOLERANCE
    rows, columns = np.flatnonzero(~flat.all(axis=1)), np.flatnonzero(~flat.all(axis=0))
    if len(rows) == 0 or len(columns) == 0:
        return 0, grey.shape[0], 0, grey.shape[1]  # all one colour
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def _picture_box(thumbnail: np.ndarray) -> tuple[int, int, int, int]:
    """Top, bottom, left and right (exclusive) of the picture inside the thumbnail's frames:
    like `_content_box`, but a row or column counts as frame when FRAME_SHARE of it is the
    frame's colour (a caption or a logo written on the frame leaves it one), and frames
    inside frames are stripped too (a mat inside a thin line: FRAME_PASSES). A frame that is
    not one colour (a gradient, a window's furniture) is not found."""
    top, bottom, left, right = 0, thumbnail.shape[0], 0, thumbnail.shape[1]
    for _ in range(FRAME_PASSES):
        inner = thumbnail[top:bottom, left:right].astype(np.int16)
        if min(inner.shape) < 3:
            break
        # The frame's colour: the commonest along the edges (a line drawn round the frame
        # blurs into its corners, not into the middle of its sides).
        edges = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
        flat = np.abs(inner - np.median(edges)) <= FRAME_TOLERANCE
        rows = np.flatnonzero(flat.mean(axis=1) < FRAME_SHARE)
        columns = np.flatnonzero(flat.mean(axis=0) < FRAME_SHARE)
        if len(rows) == 0 or len(columns) == 0:
            break  # all frame: keep what the last pass kept
        box = (top + rows[0], top + rows[-1] + 1, left + columns[0], left + columns[-1] + 1)
        if box == (top, bottom, left, right):
            break
        top, bottom, left, right = box
    return top, bottom, left, right


def _keypoints(grey: np.ndarray, thumbnail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ORB features of the picture inside any frame `_picture_box` finds, at ORB_SIDE pixels
    on its longer side, their points in the pixels of the normalised image `grey`. Frame-
    stripped, a screenshot-like copy shows its picture at the original's scale, and where
    there is no frame the features cost (ORB_SIDE / NORMALISED_SIDE)^2 of detecting them on
    `grey`. The picture is enlarged at most MAX_PICTURE_ZOOM times: a few pixels blown up to
    ORB_SIDE are all edges, alike in any two such images."""
    top, bottom, left, right = _picture_box(thumbnail)
    # The box found on the thumbnail, one thumbnail pixel wider each way: some frame may stay,
    # no picture is cut.
    rows, columns = grey.shape[0] / thumbnail.shape[0], grey.shape[1] / thumbnail.shape[1]
    top, left = max(0, int((top - 1) * rows)), max(0, int((left - 1) * columns))
    bottom = min(grey.shape[0], math.ceil((bottom + 1) * rows))
    right = min(grey.shape[1], math.ceil((right + 1) * columns))
    content = grey[top:bottom, left:right]
    scale = min(ORB_SIDE / max(content.shape), MAX_PICTURE_ZOOM)
    size = (max(1, round(content.shape[1] * scale)), max(1, round(content.shape[0] * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    points, descriptors = _orb(cv2.resize(content, size, interpolation=method))
    # Back to `grey`'s pixels (the resize maps pixel centres: x' + 0.5 = (x + 0.5) * s).
    stretch = np.array([content.shape[1] / size[0], content.shape[0] / size[1]], np.float32)
    points = (points + 0.5) * stretch - 0.5 + np.array([left, top], np.float32)
    return np.clip(points, 0, None).astype(np.float32), descriptors


def _orb(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if min(grey.shape) < _MIN_KEYPOINT_SIDE:  # a strip: ORB's pyramid cannot be built
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    equalised = cv2.createCLAHE(clipLimit=_CLAHE_CLIP, tileGridSize=(8, 8)).apply(grey)
    orb = cv2.ORB.create(nfeatures=MAX_KEYPOINTS, scaleFactor=ORB_SCALE_FACTOR,
                         nlevels=ORB_LEVELS, fastThreshold=_ORB_FAST_THRESHOLD)
    keypoints, descriptors = orb.detectAndCompute(equalised, None)
    if descriptors is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    # ORB keeps ties at its nfeatures cut, so it can return a few more: keep the strongest.
    keep = np.argsort([-k.response for k in keypoints], kind="stable")[:MAX_KEYPOINTS]
    points = np.array([keypoints[i].pt for i in keep], dtype=np.float32).reshape(-1, 2)
    return points, descriptors[keep]


def encode(signal: CopySignal) -> bytes:
    count = len(signal.points)
    thumb_h, thumb_w = signal.thumbnail.shape
    header = _HEADER.pack(MAGIC, VERSION, signal.width, signal.height, signal.phash,
                          signal.phash_mirrored, thumb_w, thumb_h, count)
    points = np.round(signal.points * 16).astype("<u2")  # 1/16 pixel, up to 4095
    return b"".join((header, signal.thumbnail.astype(np.uint8).tobytes(), points.tobytes(),
                     signal.descriptors.astype(np.uint8).tobytes()))


def perceptual_hash(data: bytes) -> bytes:
    """The 8-byte perceptual hash of an encoded signal, without decoding the rest."""
    if len(data) < _HEADER.size or data[:3] != MAGIC:
        raise SignalFormatError("not a copy signal")
    return bytes(_HEADER.unpack_from(data)[4])


class SignalFormatError(ValueError):
    """The bytes are not a copy signal of this version."""


def decoded(data: bytes | None) -> CopySignal | None:
    """The signal in `data`; None for none, or for one this build cannot read (another
    version's signal is no evidence either way)."""
    if data is None:
        return None
    try:
        return decode(data)
    except SignalFormatError:
        return None


def decode(data: bytes) -> CopySignal:
    """The signal encoded in `data`; SignalFormatError for anything that is not a whole,
    well-formed signal of this version."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SignalFormatError(f"a copy signal is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size or data[:3] != MAGIC:
        raise SignalFormatError("not a copy signal")
    _magic, version, width, height, phash, mirrored, thumb_w, thumb_h, count = (
        _HEADER.unpack_from(data))
    if version != VERSION:
        raise SignalFormatError(f"copy signal version {version}; this build reads {VERSION}")
    if not (width and height and thumb_w and thumb_h) or max(thumb_w, thumb_h) > THUMB_SIDE:
        raise SignalFormatError(f"copy signal has impossible sizes: image {width}x{height}, "
                                f"thumbnail {thumb_w}x{thumb_h}")
    if count > MAX_KEYPOINTS:
        raise SignalFormatError(f"copy signal has {count} keypoints; at most {MAX_KEYPOINTS}")
    thumb_end = _HEADER.size + thumb_w * thumb_h
    points_end = thumb_end + 4 * count
    if len(data) != points_end + 32 * count:
        raise SignalFormatError("copy signal is truncated")
    thumbnail = np.frombuffer(data, np.uint8, thumb_w * thumb_h, _HEADER.size)
    points = np.frombuffer(data, "<u2", 2 * count, thumb_end).astype(np.float32) / 16
    descriptors = np.frombuffer(data, np.uint8, 32 * count, points_end)
    return CopySignal(width, height, phash, mirrored,
                      thumbnail.reshape(thumb_h, thumb_w), points.reshape(-1, 2),
                      descriptors.reshape(-1, 32))
