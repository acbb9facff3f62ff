"""The committed small model, served for real, still finds the right image for a caption."""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch import synthetic
from imagesearch.embedder.v1 import embedder_pb2 as pb
from tests.conftest import encode


@pytest.mark.parametrize("seed", [7, 31337])
async def test_text_to_image_top1_accuracy_on_fresh_scenes(embedder_stub, seed):
    # Seeds differ from the trainer's held-out seed: these scenes were never seen.
    items = synthetic.held_out_set(seed)
    images = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=encode(image, "PNG")) for _, image, _ in items]))
    texts = await embedder_stub.EmbedTexts(pb.EmbedTextsRequest(
        texts=[pb.TextInput(text=text) for _, _, text in items]))
    image_vectors = np.array([r.embedding.values for r in images.results])
    text_vectors = np.array([r.embedding.values for r in texts.results])
    hits = (text_vectors @ image_vectors.T).argmax(axis=1) == np.arange(len(items))
    accuracy = hits.mean()
    assert accuracy >= 0.9, f"top-1 accuracy {accuracy:.3f}"


async def test_jpeg_copy_stays_nearest_to_its_original(embedder_stub):
    items = synthetic.held_out_set(99)
    originals = [encode(image, "PNG") for _, image, _ in items]
    copies = [encode(image.resize((80, 80)), "JPEG", quality=70) for _, image, _ in items]
    response = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=d) for d in originals + copies]))
    vectors = np.array([r.embedding.values for r in response.results])
    sims = vectors[len(items):] @ vectors[: len(items)].T
    assert (sims.argmax(axis=1) == np.arange(len(items))).mean() >= 0.9
