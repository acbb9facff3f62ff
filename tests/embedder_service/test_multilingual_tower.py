"""The bundled model's multilingual tower, served for real: captions in six languages of
colour x shape pairs it never trained on find their images in the English tower's space."""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch import synthetic
from imagesearch import synthetic_i18n as i18n
from imagesearch.embedder.v1 import embedder_pb2 as pb
from tests.conftest import encode


async def test_model_info_lists_the_multilingual_tower(embedder_stub):
    towers = (await embedder_stub.GetModelInfo(pb.GetModelInfoRequest())).model.text_towers
    assert [(t.name, list(t.languages), t.is_default) for t in towers] == [
        ("default", ["en"], True),
        ("multilingual", ["de", "fr", "es", "ru", "zh", "ar"], False)]


@pytest.mark.parametrize("language", ["de", "fr", "es", "ru", "zh", "ar"])
async def test_held_out_captions_find_their_images(embedder_stub, language):
    items = synthetic.held_out_set(7)
    images = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=encode(image, "PNG")) for _, image, _ in items]))
    specs = [spec for spec in i18n.held_out_specs() if spec.scene.count == 1]
    texts = await embedder_stub.EmbedTexts(pb.EmbedTextsRequest(
        language=language, texts=[pb.TextInput(text=i18n.render(s, language)) for s in specs]))
    assert {r.text_tower for r in texts.results} == {"multilingual"}
    image_vectors = np.array([r.embedding.values for r in images.results])
    top = (np.array([r.embedding.values for r in texts.results]) @ image_vectors.T).argmax(1)
    hits = [items[i][0].label == spec.scene.label for i, spec in zip(top, specs, strict=True)]
    assert np.mean(hits) >= 0.8, f"R@1 {np.mean(hits):.3f}"


async def test_auto_sends_chinese_to_the_multilingual_tower(embedder_stub):
    (result,) = (await embedder_stub.EmbedTexts(pb.EmbedTextsRequest(
        language="auto", texts=[pb.TextInput(text="一个红色圆形")]))).results
    assert (result.text_tower, result.language) == ("multilingual", "zh")
