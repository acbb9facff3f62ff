"""Exporter parity: open_clip in PyTorch vs the bundle through the service's own pipeline.

No weights can be downloaded here, so ViT-B-32 is exported with random weights; the graph,
preprocessing and tokenizer paths are the same ones a pretrained export takes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import open_clip
import pytest
import torch
from PIL import Image

from embedder_service.bundle import load_bundle
from embedder_service.export.open_clip_export import export_open_clip
from embedder_service.preprocess import ImageLimits, ImagePreprocessor
from embedder_service.runtime import RuntimeOptions, Tower
from embedder_service.tokenizer import TextTokenizer
from tests.conftest import encode

pytestmark = [pytest.mark.export, pytest.mark.slow]
TEXTS = ["a photo of an astronaut", "a cat", "a cup of coffee on a table",
         "A ROCKET launching into the sky!!", "日本語", "emoji 🚀 " * 3, "word " * 120]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("vit-b-32")
    export_open_clip("ViT-B-32", None, out, ("fp32", "fp16", "int8"))
    # Same seed, same architecture: recreate the exported weights to run them in PyTorch.
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    model.preprocess = preprocess
    return out, model


def _service_pipeline(bundle_dir: Path, precision: str):
    bundle = load_bundle(bundle_dir)
    m, variant = bundle.manifest, bundle.variant(precision)  # type: ignore[arg-type]
    options = RuntimeOptions(providers=("CPUExecutionProvider",))
    return (ImagePreprocessor(m.image, ImageLimits()),
            TextTokenizer(bundle.path(m.text.tokenizer.file), m.text.tokenizer,
                          m.text.context_length),
            Tower(bundle.path(variant.image), options), Tower(bundle.path(variant.text), options))


def _reference(model, photos_bytes: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        pixels = torch.stack([model.preprocess(Image.open(io.BytesIO(b))) for b in photos_bytes])
        images = model.encode_image(pixels, normalize=True).numpy()
        texts = model.encode_text(tokenizer(TEXTS), normalize=True).numpy()
    return images, texts


@pytest.mark.parametrize(("precision", "bound"), [("fp32", 0.999), ("int8", 0.995)])
def test_bundle_matches_open_clip_per_item(exported, photos, precision, bound):
    bundle_dir, model = exported
    photos_bytes = [encode(p, "JPEG", quality=92) for p in photos.values()]
    ref_images, ref_texts = _reference(model, photos_bytes)
    preprocess, tokenizer, image_tower, text_tower = _service_pipeline(bundle_dir, precision)
    images = image_tower.run(np.stack([preprocess(b) for b in photos_bytes]))
    texts = text_tower.run(tokenizer.pad([t.ids for t in tokenizer.encode_batch(TEXTS)]))
    image_cos = (images * ref_images).sum(axis=1)
    text_cos = (texts * ref_texts).sum(axis=1)
    assert image_cos.min() >= bound, image_cos
    assert text_cos.min() >= bound, text_cos


def test_fp16_variant_matches_fp32(exported, photos):
    # fp16 is for GPUs; ONNX Runtime's CPU provider runs it only with graph optimisations off,
    # which is enough to check the converted numbers here.
    bundle_dir, _ = exported
    preprocess, tokenizer, image32, text32 = _service_pipeline(bundle_dir, "fp32")
    manifest = load_bundle(bundle_dir).manifest
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    pixels = np.stack([preprocess(encode(p)) for p in photos.values()])
    ids = tokenizer.pad([t.ids for t in tokenizer.encode_batch(TEXTS)])
    for tower32, name, feed in ((image32, "image", {"pixel_values": pixels}),
                                (text32, "text", {"input_ids": ids})):
        session = ort.InferenceSession(str(bundle_dir / getattr(manifest.variants["fp16"], name)),
                                       options, providers=["CPUExecutionProvider"])
        half = session.run(None, feed)[0]
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        full = tower32.run(next(iter(feed.values())))
        assert (half * full).sum(axis=1).min() >= 0.999, name


def test_trimmed_padding_gives_the_same_text_embeddings(exported):
    bundle_dir, _ = exported
    _, tokenizer, _, text_tower = _service_pipeline(bundle_dir, "fp32")
    ids = [t.ids for t in tokenizer.encode_batch(["a cat", "a dog on a beach"])]
    trimmed = text_tower.run(tokenizer.pad(ids))
    full = np.zeros((2, 77), dtype=np.int64)
    for row, item in enumerate(ids):
        full[row, : len(item)] = item
    np.testing.assert_allclose(trimmed, text_tower.run(full), atol=2e-5)


def test_manifest_fingerprint_and_variants(exported):
    bundle_dir, _ = exported
    manifest = load_bundle(bundle_dir).manifest
    assert manifest.model_name == "ViT-B-32/random-init"
    assert (manifest.embedding_dim, manifest.image.size, manifest.text.context_length) == (
        512, 224, 77)
    assert set(manifest.variants) == {"fp32", "fp16", "int8"}
    for tower in ("image", "text"):
        fp16 = onnx.load(str(bundle_dir / getattr(manifest.variants["fp16"], tower)))
        onnx.checker.check_model(fp16)
        assert fp16.graph.input[0].type.tensor_type.elem_type in (
            onnx.TensorProto.FLOAT, onnx.TensorProto.INT64)
        assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    sizes = {name: entry.bytes for name, entry in manifest.files.items()}
    assert sizes["text_int8.onnx"] < sizes["text_fp32.onnx"] / 3
