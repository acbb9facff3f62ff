"""Which served model suits a collection, measured on the collection's own labelled images.

A sample of the labelled images (spread evenly across labels) is embedded by each model from
its kept pixels - the same pixels a migration would embed - and scored leave-one-out: is the
nearest other image of the same label (R@1), is one among the ten nearest (R@10), does a
similarity-weighted vote of the ten nearest give the label (k-NN accuracy), and does the
label's name, embedded as text, find the image (zero-shot accuracy: how text queries in the
labels' words would fare). Nothing is stored; the sample is embedded once per model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from imagesearch.errors import FailedPrecondition, InvalidArgument, NotFound
from search_service import class_names
from search_service import validation as check
from search_service.core import SearchCore
from search_service.domain import (
    CollectionRecord,
    ModelEvaluation,
    ModelEvaluations,
    ModelSpace,
    Outcome,
    StoredImage,
)

DEFAULT_IMAGES = 1000
MAX_IMAGES = 5000
# The labelled images read to draw the sample from, at most, per image asked for.
SCAN_FACTOR = 20
NEIGHBOURS = 10
# Images embedded per embedder call.
CHUNK = 128


async def evaluate(core: SearchCore, name: str, label_key: str, models: Sequence[str],
                   max_images: int, remaining: float | None = None) -> ModelEvaluations:
    check.check_metadata_key(label_key)
    wanted = max_images or DEFAULT_IMAGES
    if not 2 <= wanted <= MAX_IMAGES:
        raise InvalidArgument(f"max_images {max_images} is out of range: 2 to {MAX_IMAGES} "
                              f"(0 means {DEFAULT_IMAGES})")
    for model in models:
        check.check_model_name(model)
    record = await core.collection(name)
    if core.images is None or core.pixels.keep == "off":
        raise FailedPrecondition("this service keeps no pixels to embed images again from "
                                 "(SEARCH_IMAGE_STORE or SEARCH_KEEP_PIXELS is off)")
    spaces = await _spaces(core, models, remaining)
    scanned = wanted * SCAN_FACTOR
    sample = _even(await _labelled(core, record, label_key, scanned), wanted)
    pixels = await core.kept_pixels(record, [image.external_id for image, _ in sample])
    kept = [(image, label) for image, label in sample if image.external_id in pixels]
    labels = [label for _, label in kept]
    counts = defaultdict(int, {label: labels.count(label) for label in set(labels)})
    if sum(1 for c in counts.values() if c >= 2) < 2:
        raise FailedPrecondition(
            f"collection {name!r} needs at least two labels with two images each that have "
            f"kept pixels, under metadata key {label_key!r}, among the first {scanned} images "
            f"(max_images x {SCAN_FACTOR}); it has {len(counts)} labels over {len(kept)} "
            "images there: label more images, or ask for more (max_images)")
    data = [pixels[image.external_id] for image, _ in kept]
    evaluations = [await _evaluate(core, record, space, data, labels, remaining)
                   for space in spaces]
    evaluations.sort(key=lambda e: (-e.knn_accuracy, -e.recall_at_1, e.space.model_name))
    return ModelEvaluations(evaluations, len(counts), len(sample) - len(kept))


async def _spaces(core: SearchCore, models: Sequence[str], remaining: float | None
                  ) -> list[ModelSpace]:
    served = [m.space for m in await core.served_models(remaining)]
    if not models:
        return served
    picked = []
    for model in dict.fromkeys(models):
        space = next((s for s in served if model in (s.fingerprint, s.model_name)), None)
        if space is None:
            raise NotFound(f"model {model[:80]!r} is not served; served: "
                           + ", ".join(s.model_name for s in served))
        picked.append(space)
    return picked


async def _labelled(core: SearchCore, record: CollectionRecord, key: str, most: int
                    ) -> list[tuple[StoredImage, str]]:
    """Images with a string or integer label under `key`, among the first `most` in id
    order: the cost of a call is bounded by what it asks for, not by the collection."""
    found: list[tuple[StoredImage, str]] = []
    after, read = "", 0
    while read < most:
        page = await core.store.list_images(record, min(check.MAX_PAGE, most - read), after)
        read += len(page)
        for image in page:
            value = image.metadata.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                found.append((image, str(value)))
        if not page:
            break
        after = page[-1].external_id
    return found


def _even(images: list[tuple[StoredImage, str]], most: int) -> list[tuple[StoredImage, str]]:
    """At most `most` images, taken from each label in turn."""
    by_label: dict[str, list[tuple[StoredImage, str]]] = defaultdict(list)
    for item in images:
        by_label[item[1]].append(item)
    queues = [iter(group) for group in by_label.values()]
    picked: list[tuple[StoredImage, str]] = []
    while queues and len(picked) < most:
        for queue in list(queues):
            taken = next(queue, None)
            if taken is None:
                queues.remove(queue)
            elif len(picked) < most:
                picked.append(taken)
    return picked


async def _evaluate(core: SearchCore, record: CollectionRecord, space: ModelSpace,
                    data: list[bytes], labels: list[str], remaining: float | None
                    ) -> ModelEvaluation:
    target = replace(record, model=space, migration=None)
    vectors: list[np.ndarray] = []
    usable: list[int] = []
    for start in range(0, len(data), CHUNK):
        embedded = await core.embed_images(target, data[start:start + CHUNK], remaining)
        for offset, vector in enumerate(embedded):
            if not isinstance(vector, Outcome):
                vectors.append(vector)
                usable.append(start + offset)
    names = [labels[i] for i in usable]
    matrix = np.stack(vectors) if vectors else np.zeros((0, space.dimension), np.float32)
    r1, r10, knn = retrieval(matrix, names)
    return ModelEvaluation(space, space == record.model, len(usable), r1, r10, knn,
                           await _zero_shot(core, target, matrix, names, remaining))


def retrieval(vectors: np.ndarray, labels: list[str]) -> tuple[float, float, float]:
    """Leave-one-out R@1, R@10 and similarity-weighted 10-NN accuracy."""
    if len(labels) < 2:
        return 0.0, 0.0, 0.0
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(NEIGHBOURS, len(labels) - 1)
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    names = np.asarray(labels)
    same = names[nearest] == names[:, None]
    knn_hits = 0
    for row, neighbours in enumerate(nearest):
        votes: dict[str, float] = defaultdict(float)
        for column in neighbours:
            votes[labels[column]] += float(similarity[row, column])
        knn_hits += max(votes, key=lambda label: votes[label]) == labels[row]
    return (float(same[:, 0].mean()), float(same.any(axis=1).mean()),
            knn_hits / len(labels))


async def _zero_shot(core: SearchCore, target: CollectionRecord, vectors: np.ndarray,
                     labels: list[str], remaining: float | None) -> float:
    """The share of images whose nearest label name (a prompt ensemble) is theirs; 0 where
    the labels are integers, not words."""
    names = sorted(set(labels))
    if not labels or all(name.lstrip("-").isdigit() for name in names):
        return 0.0
    try:
        prompts = await class_names.embed_names(core, target, names, remaining)
    except InvalidArgument:  # a label no text tower can embed
        return 0.0
    predicted = np.asarray(names)[(vectors @ prompts.T).argmax(axis=1)]
    return float((predicted == np.asarray(labels)).mean())
