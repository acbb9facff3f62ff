"""The committed small model, served for real, still finds the right image for a caption."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL
from imagesearch import synthetic
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from tests.conftest import embedder_settings, encode

WIDE = BUNDLED_MODEL.parent / "synthetic-clip-wide"


async def _top1_accuracy(stub, seed: int, model: str = "") -> float:
    # Seeds differ from the trainer's held-out seed: these scenes were never seen.
    items = synthetic.held_out_set(seed)
    images = await stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=encode(image, "PNG")) for _, image, _ in items], model=model))
    texts = await stub.EmbedTexts(pb.EmbedTextsRequest(
        texts=[pb.TextInput(text=text) for _, _, text in items], model=model))
    image_vectors = np.array([r.embedding.values for r in images.results])
    text_vectors = np.array([r.embedding.values for r in texts.results])
    hits = (text_vectors @ image_vectors.T).argmax(axis=1) == np.arange(len(items))
    return float(hits.mean())


@pytest.mark.parametrize("seed", [7, 31337])
async def test_text_to_image_top1_accuracy_on_fresh_scenes(embedder_stub, seed):
    accuracy = await _top1_accuracy(embedder_stub, seed)
    assert accuracy >= 0.9, f"top-1 accuracy {accuracy:.3f}"


@pytest_asyncio.fixture(scope="module")
async def two_model_stub() -> AsyncIterator[embedder_pb2_grpc.EmbedderServiceStub]:
    server = EmbedderServer(embedder_settings(extra_bundles=[WIDE]))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield embedder_pb2_grpc.EmbedderServiceStub(channel)
    await server.stop(grace=1)


@pytest.mark.parametrize("seed", [7, 31337])
async def test_the_second_model_is_useful_on_fresh_scenes_too(two_model_stub, seed):
    """synthetic-clip-wide, served beside the primary and asked for by name. Measured 0.979 and
    0.958 on these seeds (0.90-0.98 over four seeds; the primary: 0.92-1.0): the same bar as
    the primary's leaves it two to three of the 48 scenes."""
    accuracy = await _top1_accuracy(two_model_stub, seed, model="synthetic-clip-wide")
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
