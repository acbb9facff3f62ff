"""Bundles with more than one text tower over one image space: routing by language, per-tower
batching, what GetModelInfo and the results report, and the manifest's checks."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio

from embedder_service.bundle import ExtraTextTower, TextConfig, load_bundle
from embedder_service.errors import BundleError
from embedder_service.export.bundle_writer import add_text_tower
from embedder_service.server import EmbedderServer
from embedder_service.tokenizer import load_tokenizer
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from tests.conftest import embedder_settings

DE_ZH = ExtraTextTower(name="copy", languages=("de", "zh"),
                       text=TextConfig.model_validate({
                           "context_length": 16, "tokenizer": {
                               "file": "copy_tokenizer.json.gz", "clean": "lower",
                               "bos_id": 49406, "eos_id": 49407, "pad_id": 0}}),
                       variants={"fp32": "text_copy_fp32.onnx"})


def towerless(bundled_model: Path, out: Path) -> Path:
    """The bundled model as an older bundle: no extra towers."""
    shutil.copytree(bundled_model, out)
    raw = json.loads((out / "manifest.json").read_text())
    for tower in raw.pop("text_towers", []):
        for name in [tower["text"]["tokenizer"]["file"], *tower["variants"].values()]:
            raw["files"].pop(name)
            (out / name).unlink()
    raw.pop("text_languages", None)
    (out / "manifest.json").write_text(json.dumps(raw))
    return out


@pytest.fixture(scope="module")
def two_tower_bundle(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tower that is the default graph again (with a shorter context), for de and zh."""
    bundle = towerless(bundled_model, tmp_path_factory.mktemp("towers") / "bundle")
    add_text_tower(bundle, DE_ZH, load_tokenizer(bundle / "tokenizer.json.gz"),
                   {"fp32": bundle / "text_fp32.onnx"})
    return bundle


@pytest_asyncio.fixture(scope="module")
async def stub(two_tower_bundle: Path) -> AsyncIterator[embedder_pb2_grpc.EmbedderServiceStub]:
    server = EmbedderServer(embedder_settings(bundle=two_tower_bundle))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield embedder_pb2_grpc.EmbedderServiceStub(channel)
    await server.stop(grace=1)


def test_adding_a_tower_keeps_the_fingerprint(two_tower_bundle, bundled_model):
    assert (load_bundle(two_tower_bundle).manifest.fingerprint
            == load_bundle(bundled_model).manifest.fingerprint)


async def test_model_info_lists_the_towers_and_their_languages(stub):
    towers = (await stub.GetModelInfo(pb.GetModelInfoRequest())).model.text_towers
    assert [(t.name, list(t.languages), t.context_length, t.is_default) for t in towers] == [
        ("default", ["en"], 32, True), ("copy", ["de", "zh"], 16, False)]


async def test_language_picks_the_tower_and_the_result_names_it(stub):
    response = await stub.EmbedTexts(pb.EmbedTextsRequest(language="de-CH", texts=[
        pb.TextInput(text="a red circle"), pb.TextInput(text="a red circle", language="en"),
        pb.TextInput(text="a red circle")]))
    routed = [(r.text_tower, r.language) for r in response.results]
    assert routed == [("copy", "de-CH"), ("default", "en"), ("copy", "de-CH")]
    vectors = [np.asarray(r.embedding.values) for r in response.results]
    # The same graph behind both towers: the same vector, whichever batch it ran in.
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)


async def test_no_language_is_the_default_tower_as_before(stub):
    (result,) = (await stub.EmbedTexts(pb.EmbedTextsRequest(
        texts=[pb.TextInput(text="a red circle")]))).results
    assert (result.text_tower, result.language) == ("default", "")


async def test_auto_routes_by_script_and_latin_to_the_default(stub):
    response = await stub.EmbedTexts(pb.EmbedTextsRequest(language="auto", texts=[
        pb.TextInput(text="一个红色圆形"), pb.TextInput(text="ein roter Kreis"),
        pb.TextInput(text="красный круг")]))
    assert [(r.text_tower, r.language) for r in response.results] == [
        ("copy", "zh"), ("default", ""), ("default", "")]


async def test_context_length_is_the_towers_own(stub):
    response = await stub.EmbedTexts(pb.EmbedTextsRequest(texts=[
        pb.TextInput(text="red " * 40, language="zh"), pb.TextInput(text="red " * 40)]))
    assert [(r.token_count, r.truncated) for r in response.results] == [(16, True), (32, True)]


async def test_unknown_language_is_invalid_argument_naming_those_served(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EmbedTexts(pb.EmbedTextsRequest(texts=[
            pb.TextInput(text="un cercle rouge", language="fr")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "no text tower serves language 'fr'; this model serves de, en, zh (or use \"auto\", "
        "or no language for the default tower)")


def _edit_towers(bundle: Path, out: Path, **changes: object) -> Path:
    shutil.copytree(bundle, out)
    raw = json.loads((out / "manifest.json").read_text())
    raw["text_towers"][0].update(changes)
    (out / "manifest.json").write_text(json.dumps(raw))
    return out


@pytest.mark.parametrize(("changes", "fault"), [
    ({"languages": ["en"]}, "languages ['en'] are served by more than one text tower"),
    ({"name": "default"}, "text tower names ['default', 'default'] are not unique"),
    ({"variants": {"int8": "text_copy_fp32.onnx"}}, "text tower 'copy' has no fp32 graph"),
    ({"languages": ["de_DE"]}, "'de_DE' is not a BCP 47 language tag"),
    ({"variants": {"fp32": "missing.onnx"}}, "files ['missing.onnx'] are used but have no "
                                             "checksum entry"),
])
def test_inconsistent_towers_stop_start_up(two_tower_bundle, tmp_path, changes, fault):
    with pytest.raises(BundleError, match=fault.replace("[", r"\[").replace("]", r"\]")):
        load_bundle(_edit_towers(two_tower_bundle, tmp_path / "bad", **changes))
