"""EvaluateModels on the core's fakes: a model whose space separates the labels ranks first,
figures are leave-one-out, and what cannot be evaluated is refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch.errors import FailedPrecondition, InvalidArgument, NotFound
from search_service.application import SearchApp
from search_service.core import PixelPolicy, SearchCore
from search_service.domain import NewImage
from search_service.evaluation import retrieval
from tests.search_service.fakes import (
    MODEL,
    OTHER_MODEL,
    FakeEmbedder,
    FakeStore,
    MemoryImages,
    unit,
)

LABELS = ("cat", "dog", "fox")


class LabelAware(FakeEmbedder):
    """The other model sees each image's label (written in its bytes) and each text's word,
    with a little noise; the primary sees only hashes of the bytes."""

    async def embed_images(self, images, remaining=None, model=""):
        fingerprint, vectors = await super().embed_images(images, remaining, model)
        if fingerprint != OTHER_MODEL.fingerprint:
            return fingerprint, vectors
        out = []
        for data, vector in zip(images, vectors, strict=True):
            label = data.decode().split(":")[0]
            mixed = unit(label, OTHER_MODEL.dimension) + 0.2 * vector
            out.append((mixed / np.linalg.norm(mixed)).astype(np.float32))
        return fingerprint, out

    async def embed_texts(self, texts, remaining=None, model=""):
        fingerprint, vectors = await super().embed_texts(texts, remaining, model)
        if fingerprint != OTHER_MODEL.fingerprint:
            return fingerprint, vectors
        return fingerprint, [unit(next(w for w in LABELS if w in t), OTHER_MODEL.dimension)
                             for t in texts]


@pytest.fixture
async def app():
    core = SearchCore(FakeStore(), LabelAware(extra=[OTHER_MODEL]), images=MemoryImages())
    app = SearchApp(core)
    await app.create_collection("c", "")
    await app.add_images("c", [NewImage(f"{label}{n}", f"{label}:{n}".encode(), {"kind": label})
                               for label in LABELS for n in range(8)]
                         + [NewImage("unlabelled", b"cat:x", {})])
    return app


async def test_the_model_that_separates_the_labels_ranks_first(app):
    report = await app.evaluate_models("c", "kind", [], 0)
    best, other = report.evaluations
    assert (best.space, other.space) == (OTHER_MODEL, MODEL)
    assert (best.recall_at_1, best.knn_accuracy, best.zero_shot_accuracy) == (1.0, 1.0, 1.0)
    assert best.images == 24 and not best.is_current and other.is_current
    assert other.recall_at_1 < 0.7
    assert (report.labels, report.images_without_pixels) == (3, 0)


async def test_the_sample_is_spread_evenly_across_labels(app):
    report = await app.evaluate_models("c", "kind", [MODEL.model_name], 6)
    (only,) = report.evaluations
    assert (only.space, only.images, report.labels) == (MODEL, 6, 3)


async def test_images_without_pixels_are_counted_and_left_out(app):
    app.core.pixels = PixelPolicy("off")
    await app.add_images("c", [NewImage("dog-old", b"dog:old", {"kind": "dog"})])
    app.core.pixels = PixelPolicy()
    report = await app.evaluate_models("c", "kind", [OTHER_MODEL.fingerprint], 0)
    assert report.images_without_pixels == 1 and report.evaluations[0].images == 24


async def test_what_cannot_be_evaluated_is_refused_with_the_reason(app):
    with pytest.raises(NotFound, match="not served; served: fake-model, other-model"):
        await app.evaluate_models("c", "kind", ["nope"], 0)
    with pytest.raises(InvalidArgument, match="max_images"):
        await app.evaluate_models("c", "kind", [], 1)
    with pytest.raises(InvalidArgument):
        await app.evaluate_models("c", "bad key!", [], 0)
    with pytest.raises(FailedPrecondition, match="at least two labels"):
        await app.evaluate_models("c", "no_such_key", [], 0)
    with pytest.raises(NotFound):
        await app.evaluate_models("missing", "kind", [], 0)
    app.core.pixels = PixelPolicy("off")
    with pytest.raises(FailedPrecondition, match="keeps no pixels"):
        await app.evaluate_models("c", "kind", [], 0)


def test_retrieval_figures_are_leave_one_out():
    # Two tight pairs: each image's nearest other is its pair, never itself.
    vectors = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
    assert retrieval(vectors, ["a", "a", "b", "b"]) == (1.0, 1.0, 1.0)
    assert retrieval(vectors, ["a", "b", "a", "b"])[0] == 0.0
