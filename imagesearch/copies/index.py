"""The copy index: one 64-bit hash per image, kept as a vector, from which copies that the
embedding ranks low (a picture framed in a screenshot, carrying a watermark, turned a few
degrees) are found as candidates for verification.

The hash is the DCT perceptual hash of the middle of the picture: its thumbnail without a
uniform frame (`signal.frameless`), less CENTRE_MARGIN of each side, where a small rotation's
corners, a caption and a frame's edges change nothing. Measured on bench/copy_data.py's TUNING
edits (where CENTRE_MARGIN was chosen, against 0 and 0.1): every framed, watermarked and
rotated copy's original within the 6 nearest of 528 images; crops move the middle, and are
the embedding's to find (`python -m bench.copy_index_eval`).

Milvus Lite 3.2 has no binary vectors, so the hash is a float vector of +-1/8 per bit (unit
length): its cosine to another hash's is 1 - 2 * hamming / 64, which every Milvus ranks.
"""

from __future__ import annotations

import numpy as np

from imagesearch.copies import signal as signals
from imagesearch.copies.signal import CopySignal

BITS = 64
CENTRE_MARGIN = 0.2
# Name of the space the vectors live in; a new hash is a new version and a new space.
SPACE = "imagesearch-copy-index/1"


def hashes(signal: CopySignal) -> tuple[np.ndarray, np.ndarray]:
    """The index hash of the image and of its mirror image, as BITS booleans each."""
    content = signals.frameless(signal.thumbnail)
    height, width = content.shape
    top, left = int(height * CENTRE_MARGIN), int(width * CENTRE_MARGIN)
    middle = content[top:height - top, left:width - left]
    if min(middle.shape) < 2:
        middle = content  # a strip: all of it is the middle
    plain, mirrored = signals.dct_hashes(np.ascontiguousarray(middle))
    return _unpacked(plain), _unpacked(mirrored)


def vector(bits: np.ndarray) -> np.ndarray:
    """The unit vector of a hash: +-1/8 per bit."""
    signs: np.ndarray = np.where(bits, 1.0, -1.0).astype(np.float32)
    return signs / np.float32(np.sqrt(BITS))


def hamming(similarity: float) -> int:
    """The Hamming distance of two hashes from their vectors' cosine."""
    return round((1.0 - similarity) * BITS / 2)


def _unpacked(packed: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(packed, np.uint8)).astype(bool)
