"""M-CLIP exporter parity: transformers in PyTorch vs the added tower through the service.

No weights can be downloaded here, so the checkpoint is a tiny XLM-RoBERTa with random weights,
a random projection and a SentencePiece-style (Unigram, Metaspace) tokenizer trained on the spot,
written in M-CLIP's checkpoint layout. The reference is M-CLIP's own forward: the Hugging Face
tokenizer, the transformer's last hidden states averaged over the attention mask, the linear
layer; the bundle's vectors come out L2-normalised, as every tower's do.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import pytest_asyncio
import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

from embedder_service.bundle import load_bundle
from embedder_service.export.__main__ import main
from embedder_service.export.bundle_writer import add_text_tower
from embedder_service.export.mclip import export_mclip_tower, save_with_weights_beside
from embedder_service.runtime import RuntimeOptions, Tower
from embedder_service.server import EmbedderServer
from embedder_service.tokenizer import TextTokenizer, load_tokenizer
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from tests.conftest import embedder_settings

pytestmark = pytest.mark.export
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids 0-3; <mask> comes last
CONTEXT = 24
LANGUAGES = ("ja", "ko", "hi", "sv")
TEXTS = ["a red circle", "ein blauer Würfel auf grünem Grund", "красный круг на белом фоне",
         "一个红色的圆", "青い四角形", "مربع أزرق صغير", "x", "red circle " * 12]
CORPUS = [*TEXTS[:-1], "a small green square", "zwei gelbe Sterne", "синий треугольник",
          "两个绿色的星星", "赤い丸が二つ", "مثلث أحمر كبير", "en liten blå cirkel"]


def train_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(CORPUS * 4, trainers.UnigramTrainer(
        vocab_size=300, special_tokens=[*SPECIALS, "<mask>"], unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tokenizer


def write_checkpoint(root: Path, dim: int) -> tuple[Path, XLMRobertaModel, torch.nn.Linear]:
    """M-CLIP's layout: config.json naming the transformer (here a local directory), one
    weights file with transformer.* (pooler included) and LinearTransformation.*, a tokenizer."""
    torch.manual_seed(0)
    raw = train_tokenizer()
    assert [raw.token_to_id(token) for token in SPECIALS] == [0, 1, 2, 3]
    base = XLMRobertaConfig(
        vocab_size=raw.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=CONTEXT + 2,
        pad_token_id=1, bos_token_id=0, eos_token_id=2)
    base.save_pretrained(root / "base")
    transformer = XLMRobertaModel(base).eval()
    projection = torch.nn.Linear(32, dim)
    checkpoint = root / "mclip"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({
        "model_type": "M-CLIP", "modelBase": str(root / "base"),
        "transformerDimensions": 32, "numDims": dim}))
    state = {f"transformer.{k}": v for k, v in transformer.state_dict().items()}
    state |= {f"LinearTransformation.{k}": v for k, v in projection.state_dict().items()}
    torch.save(state, checkpoint / "pytorch_model.bin")
    PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", cls_token="<s>",
        sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        model_max_length=CONTEXT).save_pretrained(checkpoint)
    return checkpoint, transformer, projection


def mclip_reference(checkpoint: Path, transformer: XLMRobertaModel,
                    projection: torch.nn.Linear, texts: list[str]) -> np.ndarray:
    """MultilingualCLIP.forward (multilingual_clip/pt_multilingual_clip.py), normalised."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        embs = transformer(**batch)[0]
        att = batch["attention_mask"]
        embs = (embs * att.unsqueeze(2)).sum(dim=1) / att.sum(dim=1)[:, None]
        return torch.nn.functional.normalize(projection(embs), dim=-1).numpy()


@pytest.fixture(scope="module")
def checkpoint(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, np.ndarray]:
    """The checkpoint, and its vectors for TEXTS as M-CLIP computes them."""
    root = tmp_path_factory.mktemp("mclip")
    dim = load_bundle(bundled_model).manifest.embedding_dim
    directory, transformer, projection = write_checkpoint(root, dim)
    return directory, mclip_reference(directory, transformer, projection, TEXTS)


@pytest.fixture(scope="module")
def exported(checkpoint, bundled_model: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, np.ndarray]:
    bundle = tmp_path_factory.mktemp("exported") / "bundle"
    shutil.copytree(bundled_model, bundle)
    export_mclip_tower(str(checkpoint[0]), bundle, LANGUAGES)
    return bundle, checkpoint[1]


def test_the_tower_is_added_beside_the_others_and_the_space_is_unchanged(exported,
                                                                         bundled_model):
    bundle, _ = exported
    before, after = load_bundle(bundled_model).manifest, load_bundle(bundle).manifest
    assert after.fingerprint == before.fingerprint
    assert [t.name for t in after.text_towers] == [*(t.name for t in before.text_towers), "mclip"]
    tower = after.text_towers[-1]
    assert (tower.languages, tower.text.context_length) == (LANGUAGES, CONTEXT)
    assert (tower.text.tokenizer.bos_id, tower.text.tokenizer.eos_id,
            tower.text.tokenizer.pad_id) == (0, 2, 1)


def test_onnx_runtime_matches_transformers_on_every_script_and_length(exported):
    bundle, reference = exported
    loaded = load_bundle(bundle)
    tower = loaded.manifest.text_towers[-1]
    tokenizer = TextTokenizer(loaded.path(tower.text.tokenizer.file), tower.text.tokenizer,
                              tower.text.context_length)
    graph = Tower(loaded.tower_graph(tower, "fp32"), RuntimeOptions(
        providers=("CPUExecutionProvider",)))
    encoded = tokenizer.encode_batch(TEXTS)
    assert encoded[-1].truncated and len(encoded[-1].ids) == CONTEXT
    together = graph.run(tokenizer.pad([t.ids for t in encoded]))
    np.testing.assert_allclose(together, reference, atol=1e-5)
    # Alone, each text has no padding at all: the same vectors.
    alone = np.concatenate([graph.run(tokenizer.pad([t.ids])) for t in encoded])
    np.testing.assert_allclose(alone, reference, atol=1e-5)


def serve_tower(bundle: Path) -> np.ndarray:
    """TEXTS through the bundle's last tower, as the service tokenizes and runs them."""
    loaded = load_bundle(bundle)
    tower = loaded.manifest.text_towers[-1]
    tokenizer = TextTokenizer(loaded.path(tower.text.tokenizer.file), tower.text.tokenizer,
                              tower.text.context_length)
    graph = Tower(loaded.tower_graph(tower, "fp32"), RuntimeOptions(
        providers=("CPUExecutionProvider",)))
    return graph.run(tokenizer.pad([t.ids for t in tokenizer.encode_batch(TEXTS)]))


def test_a_graph_with_its_weights_beside_it_travels_with_them(exported, tmp_path):
    """How XLM-R Large's 2.2 GB fp32 graph is carried (shown here on the tiny one)."""
    bundle, reference = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    tower = load_bundle(copy).manifest.text_towers[-1]
    graph, tokenizer = copy / tower.variants["fp32"], load_tokenizer(
        copy / tower.text.tokenizer.file)
    split = tmp_path / "split" / graph.name
    split.parent.mkdir()
    save_with_weights_beside(onnx.load(str(graph)), split)
    add_text_tower(copy, tower, tokenizer, {"fp32": split})
    files = load_bundle(copy).manifest.files
    assert files[f"{graph.name}.data"].bytes > 0
    assert files[graph.name].bytes < (bundle / graph.name).stat().st_size
    np.testing.assert_allclose(serve_tower(copy), reference, atol=1e-5)
    # Replaced by a single-file graph, the weights file goes.
    add_text_tower(copy, tower, tokenizer, {"fp32": bundle / graph.name})
    assert f"{graph.name}.data" not in load_bundle(copy).manifest.files
    assert not (copy / f"{graph.name}.data").exists()


@pytest_asyncio.fixture(scope="module")
async def stub(exported) -> AsyncIterator[embedder_pb2_grpc.EmbedderServiceStub]:
    server = EmbedderServer(embedder_settings(bundle=exported[0]))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield embedder_pb2_grpc.EmbedderServiceStub(channel)
    await server.stop(grace=1)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_embedder_routes_the_tower_languages_to_it(exported, stub, language):
    _, reference = exported
    reply = await stub.EmbedTexts(pb.EmbedTextsRequest(
        language=language, texts=[pb.TextInput(text=text) for text in TEXTS]))
    assert {r.text_tower for r in reply.results} == {"mclip"}
    vectors = np.array([r.embedding.values for r in reply.results])
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


async def test_model_info_lists_the_mclip_tower(stub):
    towers = (await stub.GetModelInfo(pb.GetModelInfoRequest())).model.text_towers
    assert ("mclip", list(LANGUAGES), False) in [
        (t.name, list(t.languages), t.is_default) for t in towers]


def test_the_cli_adds_the_tower(checkpoint, bundled_model, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundled_model, bundle)
    assert main(["--add-mclip-tower", str(checkpoint[0]), "--bundle", str(bundle),
                 "--languages", "ja, ko", "--tower-name", "xlmr"]) == 0
    assert "added text tower 'xlmr' (ja, ko)" in capsys.readouterr().out
    assert load_bundle(bundle).manifest.text_towers[-1].languages == ("ja", "ko")


def test_the_cli_refuses_languages_another_tower_serves(checkpoint, bundled_model, tmp_path,
                                                        capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundled_model, bundle)
    manifest = (bundle / "manifest.json").read_bytes()
    assert main(["--add-mclip-tower", str(checkpoint[0]), "--bundle", str(bundle),
                 "--languages", "ja,DE,en"]) == 1
    assert "languages ['DE', 'en'] are already served by another text tower" in (
        capsys.readouterr().err)
    assert (bundle / "manifest.json").read_bytes() == manifest
