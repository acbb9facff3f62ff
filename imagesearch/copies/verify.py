"""Is one image an edited copy of another? Two independent tests on their copy signals.

- Geometric: ORB descriptors matched (Lowe's ratio test), a similarity transform (rotation,
  scale, translation: what crops, padding, resizing and small rotations do) fitted by RANSAC,
  and the aligned thumbnails compared by normalised cross-correlation over their overlap. The
  photometric step is what keeps precision: a rotated photo's straight black corners or one
  strong edge give many geometric inliers against unrelated drawings, never a matching picture.
- Global: perceptual-hash distance (direct or mirrored) with the thumbnails correlated as they
  are (or mirrored); this catches copies of images too smooth for keypoints, and flips.

Thresholds were set on a tuning set kept apart from the reported evaluation (bench/copy_eval.py
says which); they do not depend on the embedding model.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np

from imagesearch.copies.signal import CopySignal

# Two ways to pass the geometric test: a few inliers and a close photometric match, or many
# inliers and a looser one (overlays and large frames lower the correlation of true copies).
MIN_INLIERS = 12
MIN_ALIGNED_CORRELATION = 0.80
STRONG_INLIERS = 30
MIN_STRONG_CORRELATION = 0.45
# Fine texture (bricks, print) can be too flat to correlate at thumbnail size once blurred:
# then geometry alone decides, with a higher bar.
GEOMETRY_ONLY_INLIERS = 40
MIN_OVERLAP = 0.25
MAX_HASH_DISTANCE = 10
MIN_GLOBAL_CORRELATION = 0.90
# Thumbnails flatter than this (grey-level standard deviation) carry too little to correlate.
MIN_THUMB_CONTRAST = 4.0
_RATIO = 0.8
_RANSAC_PIXELS = 4.0
_MAX_SCALE = 6.0
_BLUR_SIGMA = 0.8


class Verdict(enum.Enum):
    COPY = "copy"
    NOT_A_COPY = "not_a_copy"


@dataclass(frozen=True)
class Evidence:
    verdict: Verdict
    hash_distance: int  # bits of 64, the smaller of direct and mirrored
    mirrored: bool  # the copy is a mirror image
    inliers: int  # geometric inliers of the best alignment (0 when none was found)
    correlation: float  # of the aligned thumbnails, in [-1, 1]; 0 when not computed

    @property
    def is_copy(self) -> bool:
        return self.verdict is Verdict.COPY


def hamming(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big").__xor__(int.from_bytes(b, "big")).bit_count()


def compare(query: CopySignal, candidate: CopySignal) -> Evidence:
    direct = hamming(query.phash, candidate.phash)
    flipped = hamming(query.phash_mirrored, candidate.phash)
    mirrored = flipped < direct
    distance = min(direct, flipped)
    inliers, aligned = _geometric(query, candidate)
    if _geometric_copy(inliers, aligned):
        return Evidence(Verdict.COPY, distance, False, inliers, aligned or 0.0)
    if distance <= MAX_HASH_DISTANCE:
        whole = _global_correlation(query, candidate, mirrored)
        if whole is not None and whole >= MIN_GLOBAL_CORRELATION:
            return Evidence(Verdict.COPY, distance, mirrored, inliers, whole)
    return Evidence(Verdict.NOT_A_COPY, distance, mirrored, inliers, aligned or 0.0)


def _geometric_copy(inliers: int, aligned: float | None) -> bool:
    if aligned is None:
        return inliers >= GEOMETRY_ONLY_INLIERS
    return ((inliers >= MIN_INLIERS and aligned >= MIN_ALIGNED_CORRELATION)
            or (inliers >= STRONG_INLIERS and aligned >= MIN_STRONG_CORRELATION))


_matcher = cv2.BFMatcher(cv2.NORM_HAMMING)


def _geometric(query: CopySignal, candidate: CopySignal) -> tuple[int, float | None]:
    """Distinct inliers of the best alignment, and the correlation of the aligned thumbnails
    (0 when there is no alignment, None when they are too flat to tell)."""
    if len(query.descriptors) < MIN_INLIERS or len(candidate.descriptors) < MIN_INLIERS:
        return 0, 0.0
    pairs = _matcher.knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
    if len(good) < MIN_INLIERS:
        return len(good), 0.0
    source = query.points[[m.queryIdx for m in good]]
    target = candidate.points[[m.trainIdx for m in good]]
    transform, mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PIXELS)
    if transform is None:
        return 0, 0.0
    # Distinct candidate points: many query points matched to one flat-region point are a
    # degenerate fit, not evidence.
    inliers = len({m.trainIdx for m, keep in zip(good, mask.ravel(), strict=True) if keep})
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if inliers < MIN_INLIERS or not 1 / _MAX_SCALE <= scale <= _MAX_SCALE:
        return inliers, 0.0
    return inliers, _aligned_correlation(query, candidate, transform)


def _aligned_correlation(query: CopySignal, candidate: CopySignal,
                         transform: np.ndarray) -> float | None:
    """Correlation of the query's thumbnail with the candidate's, warped into its frame."""
    query_h, query_w = query.thumbnail.shape
    candidate_h, candidate_w = candidate.thumbnail.shape
    to_query = np.diag([query_w / query.width, query_h / query.height, 1.0])
    to_candidate = np.diag([candidate_w / candidate.width, candidate_h / candidate.height, 1.0])
    affine = to_candidate @ np.vstack([transform, [0, 0, 1]]) @ np.linalg.inv(to_query)
    # Candidate thumbnail pixels per query thumbnail pixel: the finer of the two is blurred
    # to the coarser one's resolution first, or fine texture (bricks, gravel, print) aliases
    # into patterns that do not correlate.
    ratio = max(float(np.sqrt(abs(np.linalg.det(affine[:2, :2])))), 1e-3)
    source = _smooth(candidate.thumbnail, _BLUR_SIGMA * max(ratio, 1.0))
    target = _smooth(query.thumbnail, _BLUR_SIGMA * max(1.0 / ratio, 1.0))
    warped = cv2.warpAffine(source, affine[:2], (query_w, query_h),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=-1.0)
    # Inside the warped image only, one pixel clear of its border (blended with the fill).
    overlap = cv2.erode((warped >= 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if overlap.mean() < MIN_OVERLAP:
        return 0.0
    return _correlation(target[overlap], warped[overlap])


def _smooth(thumbnail: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Blurred a little, so that a pixel's misalignment costs little correlation."""
    return cv2.GaussianBlur(thumbnail.astype(np.float32), (0, 0), sigma or _BLUR_SIGMA)


def _global_correlation(query: CopySignal, candidate: CopySignal, mirrored: bool
                        ) -> float | None:
    """The thumbnails compared whole (the copy is resized, recoloured or flipped only)."""
    thumb = query.thumbnail[:, ::-1] if mirrored else query.thumbnail
    if thumb.shape != candidate.thumbnail.shape:
        thumb = cv2.resize(thumb, candidate.thumbnail.shape[::-1], interpolation=cv2.INTER_AREA)
    return _correlation(_smooth(thumb), _smooth(candidate.thumbnail))


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a - a.mean()
    b = b - b.mean()
    spread_a, spread_b = float(np.sqrt((a * a).mean())), float(np.sqrt((b * b).mean()))
    if min(spread_a, spread_b) < MIN_THUMB_CONTRAST:
        return None
    return float((a * b).mean() / (spread_a * spread_b))
