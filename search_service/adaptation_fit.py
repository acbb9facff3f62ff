"""Fitting a collection's query adaptation from its recorded feedback: pure numpy, no I/O.

The adaptation is a residual linear map of text query vectors, q' = (q + W q) / |q + W q|;
image vectors are never touched, so nothing is re-indexed. W is fit by a contrastive loss -
each judged query's softmax over the judged images (at CLIP's temperature) should put its mass
on the images judged relevant to it - with an L2 penalty on W, which pulls the map toward the
identity: where feedback says nothing, queries stay as they were. bench/adaptation_eval.py
compared this with a ridge regression onto Rocchio targets and a Tip-Adapter-style cache of
judged queries; this measured best after 10 rounds and did not cost the original domain.

The held-out figure: a fifth of the judged queries (by their vector's digest, so the same
feedback always splits the same way) is left out of a first fit; for each, whether its
highest-scored judged image is one judged relevant, before the map and after. The map served
is then fit again on every query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Softmax temperature of the loss: CLIP's logit scale is 100; the bundled model's cosines
# between matching text and images sit lower, and 20 measured better than 10 or 100.
LOGIT_SCALE = 20.0
# The pull toward the identity (L2 on W): 0.01 kept the original domain within a point
# (bench/adaptation_eval.py) while 0.001 began to cost it.
PENALTY = 0.01
STEPS, STEP_SIZE = 300, 0.5
# Bounds on one fit's work: queries (rows of the loss) and candidate images (its columns).
MAX_QUERIES, MAX_CANDIDATES = 4096, 2048
HELD_OUT_SHARE = 5  # one query in five
# A new map is switched on only when it gets clearly more of the held-out queries right than
# no map: at least this share of them, and at least MIN_GAINED of them. A gain of one or two
# queries in a hundred is within the noise of the split: on the model's own renderer such maps
# (held-out 0.97 -> 0.98 and 0.99) cost 2 points of R@1 on other queries, while on a domain
# the model reads badly the gain is tens of points (bench/adaptation_eval.py).
MIN_GAIN, MIN_GAINED = 0.05, 2


@dataclass(frozen=True)
class Judged:
    """One recorded query and its judgements: the query's unit vector, the ids of the images
    judged relevant and not."""

    query: np.ndarray
    relevant: tuple[str, ...]
    not_relevant: tuple[str, ...]


@dataclass(frozen=True)
class Fitted:
    matrix: np.ndarray  # I + W, float32, dimension x dimension
    queries: int  # judged queries used (with at least one relevant image)
    held_out: int  # queries held out of the first fit
    held_out_before: float  # their precision at 1 among judged images without the map
    held_out_after: float  # ... and with the first fit's map


def usable(judged: Sequence[Judged]) -> list[Judged]:
    """The queries a fit can learn from: at least one image judged relevant."""
    return [j for j in judged if j.relevant]


def fit(judged: Sequence[Judged], images: dict[str, np.ndarray], seed: int = 0) -> Fitted:
    """The map from the judged queries; `images` holds every judged image's vector (those
    missing - deleted since - are left out). Deterministic for the same input."""
    rows = [j for j in usable(judged) if any(i in images for i in j.relevant)]
    if not rows:
        raise ValueError("no judged query with a relevant image to fit on")
    rng = np.random.default_rng(seed)
    if len(rows) > MAX_QUERIES:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), MAX_QUERIES, replace=False))]
    held = [_held_out(j) for j in rows]
    train = [j for j, h in zip(rows, held, strict=True) if not h] or rows
    test = [j for j, h in zip(rows, held, strict=True) if h]
    first = _fit(train, images, rng)
    before = _precision_at_1(test, images, np.eye(first.shape[0], dtype=np.float32))
    after = _precision_at_1(test, images, first)
    return Fitted(_fit(rows, images, rng), len(rows), len(test), before, after)


def worth_enabling(fitted: Fitted) -> bool:
    """Whether the map measured clearly better than none on the queries held out of its fit."""
    # Counted in queries: the shares are of a whole number of them.
    gained = round((fitted.held_out_after - fitted.held_out_before) * fitted.held_out)
    return gained >= MIN_GAINED and gained >= MIN_GAIN * fitted.held_out


def apply(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each row q of `vectors` mapped to (I + W) q, normalised."""
    mapped = vectors.astype(np.float64) @ matrix.astype(np.float64).T
    norms = np.linalg.norm(mapped, axis=1, keepdims=True)
    out: np.ndarray = (mapped / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return out


def _held_out(judged: Judged) -> bool:
    digest = hashlib.sha256(judged.query.astype(np.float32).tobytes()).digest()
    return digest[0] % HELD_OUT_SHARE == 0


def _fit(rows: Sequence[Judged], images: dict[str, np.ndarray],
         rng: np.random.Generator) -> np.ndarray:
    """Gradient descent on mean cross-entropy + PENALTY/2 * |W|^2, over a shared pool of
    candidates: every judged image (a sample of MAX_CANDIDATES when more)."""
    pool = sorted({i for j in rows for i in (*j.relevant, *j.not_relevant) if i in images})
    if len(pool) > MAX_CANDIDATES:
        keep = set(rng.choice(len(pool), MAX_CANDIDATES, replace=False).tolist())
        pool = [i for n, i in enumerate(pool) if n in keep]
    column = {image_id: n for n, image_id in enumerate(pool)}
    targets = np.zeros((len(rows), len(pool)))
    for n, j in enumerate(rows):
        for image_id in j.relevant:
            if image_id in column:
                targets[n, column[image_id]] = 1.0
    kept = targets.sum(axis=1) > 0
    queries = np.stack([j.query for j in rows]).astype(np.float64)[kept]
    targets = targets[kept] / targets[kept].sum(axis=1, keepdims=True)
    candidates = np.stack([images[i] for i in pool]).astype(np.float64)
    dimension = queries.shape[1]
    w = np.zeros((dimension, dimension))
    for _ in range(STEPS):
        logits = LOGIT_SCALE * (queries + queries @ w.T) @ candidates.T
        logits -= logits.max(axis=1, keepdims=True)
        shares = np.exp(logits)
        shares /= shares.sum(axis=1, keepdims=True)
        grad_z = LOGIT_SCALE * (shares - targets) @ candidates / len(queries)
        w -= STEP_SIZE * (grad_z.T @ queries + PENALTY * w)
    matrix: np.ndarray = (np.eye(dimension) + w).astype(np.float32)
    return matrix


def _precision_at_1(rows: Sequence[Judged], images: dict[str, np.ndarray],
                    matrix: np.ndarray) -> float:
    """Share of `rows` whose best-scored judged image (after the map) is a relevant one."""
    scored = []
    for j in rows:
        judged = [(i, True) for i in j.relevant if i in images] + [
            (i, False) for i in j.not_relevant if i in images]
        if not judged:
            continue
        query = apply(matrix, j.query[None, :])[0]
        scores = [float(query @ images[i]) for i, _ in judged]
        scored.append(judged[int(np.argmax(scores))][1])
    return float(np.mean(scored)) if scored else 0.0
