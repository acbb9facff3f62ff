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
import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from imagesearch.copies import signal as signals
from imagesearch.copies.signal import CopySignal

# Two ways to pass the geometric test: a few inliers and a close photometric match, or many
# inliers and a looser one (overlays and large frames lower the correlation of true copies).
MIN_INLIERS = 12
MIN_ALIGNED_CORRELATION = 0.80
STRONG_INLIERS = 30
MIN_STRONG_CORRELATION = 0.45
# Fine texture (bricks, print) can be too flat to correlate at thumbnail size once blurred:
# then geometry alone decides, with a higher bar.
GEOMETRY_ONLY_INLIERS = 30
# Of the smaller image's area: an edited copy lies (almost) wholly inside the other image;
# two crops of one photo that merely overlap are not copies of each other.
MIN_OVERLAP = 0.6
MAX_HASH_DISTANCE = 14
MIN_GLOBAL_CORRELATION = 0.90
MAX_GLOBAL_ASPECT_CHANGE = 0.08  # log ratio: 8% (a frame found to a pixel of 64)
MAX_BRIGHTNESS_CHANGE = 48.0  # mean grey level
MAX_CONTRAST_CHANGE = 2.0  # ratio of grey-level spreads
MIN_CONTENT_SIDE = 8  # thumbnail pixels
MAX_GLOBAL_SHIFT = 0.1  # of the thumbnail's size, when aligning a whole image
# Fewer keypoints than this in either image: too plain for the geometric test to be the judge.
PLAIN_KEYPOINTS = 300
# Thumbnails flatter than this (grey-level standard deviation) carry too little to correlate.
MIN_THUMB_CONTRAST = 4.0
# A thumbnail pixel is textured where the local standard deviation (3 x 3) reaches this; at
# least this share of the compared pixels must be, or the comparison is no evidence.
MIN_TEXTURE = 1.0
MIN_TEXTURED = 0.15
# Plain images (few keypoints: drawings, logos) may be mostly flat: their edges decide.
MIN_TEXTURED_PLAIN = 0.02
# Regions of the aligned overlap that must have detail (and how much) for their median
# correlation to count.
MIN_REGIONS = 4
MIN_REGION_PIXELS = 12
# The share of compared pixels left out as outliers (overlays) before correlating.
TRIMMED = 0.10
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
    if not _geometric_copy(inliers, aligned) and inliers >= MIN_INLIERS:
        # Matching is not symmetric (ratio test, which image's points are distinct): the
        # verdict must not depend on which image asks.
        reverse = _geometric(candidate, query)
        if _geometric_copy(*reverse):
            inliers, aligned = reverse
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
    warped, overlap = _warp(source, affine[:2], target.shape)
    # Of the smaller picture: a crop inside a framed copy overlaps all of itself.
    smaller = min(query_w * query_h, candidate_w * candidate_h / (ratio * ratio))
    if overlap.sum() < MIN_OVERLAP * smaller:
        return 0.0
    detail = _detail(target, warped, overlap)
    whole = _correlation(target, warped, overlap, detail=detail)
    if whole is None:
        return None
    return min(whole, _regional(target, warped, overlap, detail, whole))


def _warp(source: np.ndarray, affine: np.ndarray, shape: tuple[int, ...]
          ) -> tuple[np.ndarray, np.ndarray]:
    """`source` resampled into a frame of `shape` by the inverse map `affine`, and where it
    lies: inside the warped image only, one pixel clear of its border (blended with the
    fill)."""
    size, flags = (shape[1], shape[0]), cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(source, affine, size, flags=flags)
    inside = cv2.warpAffine(np.ones_like(source), affine, size, flags=flags)
    overlap = cv2.erode((inside > 0.999).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return warped, overlap


def _regional(target: np.ndarray, warped: np.ndarray, overlap: np.ndarray,
              detail: np.ndarray, whole: float) -> float:
    """The median correlation of the overlap's regions (a 4 x 4 grid): a copy agrees almost
    everywhere, while different pictures carrying one watermark or logo agree only where it
    is. `whole` when too few regions have detail enough to tell."""
    rows, columns = np.flatnonzero(overlap.any(axis=1)), np.flatnonzero(overlap.any(axis=0))
    found = []
    for top, bottom in itertools.pairwise(np.linspace(rows[0], rows[-1] + 1, 5).astype(int)):
        for left, right in itertools.pairwise(
                np.linspace(columns[0], columns[-1] + 1, 5).astype(int)):
            cell = detail[top:bottom, left:right]
            if cell.sum() >= MIN_REGION_PIXELS:
                r = _plain_pearson(target[top:bottom, left:right][cell],
                                   warped[top:bottom, left:right][cell])
                if r is not None:
                    found.append(r)
    return float(np.median(found)) if len(found) >= MIN_REGIONS else whole


def _smooth(thumbnail: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Blurred a little, so that a pixel's misalignment costs little correlation."""
    return cv2.GaussianBlur(thumbnail.astype(np.float32), (0, 0), sigma or _BLUR_SIGMA)


def _global_correlation(query: CopySignal, candidate: CopySignal, mirrored: bool
                        ) -> float | None:
    """The thumbnails compared whole (the copy is resized, recoloured or flipped, perhaps
    trimmed a little): as they are, then once aligned by ECC (images too plain for
    keypoints, such as drawings, are aligned on their intensities instead)."""
    # The pictures without their frames: frames of one size and colour around different
    # pictures agree everywhere but inside.
    thumb = signals.frameless(query.thumbnail[:, ::-1] if mirrored else query.thumbnail)
    other = signals.frameless(candidate.thumbnail)
    aspect = (thumb.shape[1] / thumb.shape[0]) / (other.shape[1] / other.shape[0])
    if min(*thumb.shape, *other.shape) < MIN_CONTENT_SIDE or (
            abs(np.log(aspect)) > MAX_GLOBAL_ASPECT_CHANGE):
        return None  # a whole-image copy keeps the picture's aspect ratio
    if thumb.shape != other.shape:
        thumb = cv2.resize(thumb, other.shape[::-1], interpolation=cv2.INTER_AREA)
    target, source = _smooth(thumb), _smooth(other)
    # Correlation ignores brightness and contrast; a copy changes them only so much (a dark
    # circle on white and one on grey correlate perfectly).
    spread = (float(target.std()) + 1.0) / (float(source.std()) + 1.0)
    if (abs(float(target.mean()) - float(source.mean())) > MAX_BRIGHTNESS_CHANGE
            or not 1 / MAX_CONTRAST_CHANGE <= spread <= MAX_CONTRAST_CHANGE):
        return None
    plain = min(len(query.points), len(candidate.points)) < PLAIN_KEYPOINTS
    textured = MIN_TEXTURED_PLAIN if plain else MIN_TEXTURED
    whole = _correlation(target, source, textured=textured)
    # Only for plain images: photos with keypoints to spare that failed the geometric test
    # are no copies, and aligning them whole lines up what frames they sit in.
    if whole is None or whole >= MIN_GLOBAL_CORRELATION or not plain:
        return whole
    affine = _ecc(target, source)
    if affine is None:
        return whole
    warped, overlap = _warp(source, affine, target.shape)
    if overlap.mean() < 1 - 2 * MAX_GLOBAL_SHIFT:
        return whole
    aligned = _correlation(target, warped, overlap, textured)
    return whole if aligned is None else max(whole, aligned)


def _ecc(target: np.ndarray, source: np.ndarray) -> np.ndarray | None:
    """The affine map that best aligns `source` to `target` (inverse map, ECC), if it is a
    small one: scale within 15%, shift within MAX_GLOBAL_SHIFT of the size, little shear."""
    affine = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:
        _, found = cv2.findTransformECC(target, source, affine, cv2.MOTION_AFFINE, criteria)
    except cv2.error:  # did not converge
        return None
    affine = np.asarray(found)
    linear = affine[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    shear = float(np.abs(linear / scale - np.eye(2)).max())
    shift = np.abs(affine[:, 2]) / np.array(target.shape[::-1])
    if not 0.85 <= scale <= 1.15 or shear > 0.05 or shift.max() > MAX_GLOBAL_SHIFT:
        return None
    return affine


def _correlation(a: np.ndarray, b: np.ndarray, within: np.ndarray | None = None,
                 textured: float = MIN_TEXTURED, detail: np.ndarray | None = None
                 ) -> float | None:
    """Over the pixels (of `within`) where either image has texture (`detail`, when the
    caller has it): flat areas - the frames of screenshots, a plain background - agree
    whatever the pictures are, so they are not evidence. None when too little of it has
    texture to tell."""
    inside = np.ones(a.shape, bool) if within is None else within
    if detail is None:
        detail = _detail(a, b, inside)
    if detail.sum() < textured * inside.sum():
        return None
    return _pearson(a[detail], b[detail])


def _detail(a: np.ndarray, b: np.ndarray, within: np.ndarray) -> np.ndarray:
    """The pixels of `within` where either image has texture."""
    textured: np.ndarray = within & ((_texture(a) >= MIN_TEXTURE) | (_texture(b) >= MIN_TEXTURE))
    return textured


def _texture(image: np.ndarray) -> np.ndarray:
    """Local grey-level standard deviation over 3 x 3 pixels."""
    mean = cv2.blur(image, (3, 3))
    spread: np.ndarray = np.sqrt(np.maximum(cv2.blur(image * image, (3, 3)) - mean * mean, 0))
    return spread


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Correlation without the pixels that fit worst (TRIMMED of them): an overlay - a
    watermark, a caption, a logo - changes a small part of a copy by a lot."""
    r = _plain_pearson(a, b)
    if r is None or TRIMMED == 0:
        return r
    # Residuals of b against a on the line the two fit best (total least squares on
    # standardised values), so that neither image is privileged.
    za, zb = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    residual = np.abs(zb - np.sign(r) * za)
    keep = residual <= np.quantile(residual, 1 - TRIMMED)
    return _plain_pearson(a[keep], b[keep])


def _plain_pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a - a.mean()
    b = b - b.mean()
    spread_a, spread_b = float(np.sqrt((a * a).mean())), float(np.sqrt((b * b).mean()))
    if min(spread_a, spread_b) < MIN_THUMB_CONTRAST:
        return None
    return float((a * b).mean() / (spread_a * spread_b))
