"""The runtime assumes no particular tokenizer: a bundle with a WordPiece tokenizer (BERT-style
specials, case-sensitive cleaning, its own pad id) is served without code changes, as a
multilingual OpenCLIP export with a Hugging Face tokenizer would be."""

from __future__ import annotations

import gzip
import json
import shutil

import grpc
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from embedder_service.bundle import FileEntry, Manifest, fingerprint, sha256_file
from embedder_service.server import EmbedderServer
from imagesearch import synthetic
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from tests.conftest import embedder_settings

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def _wordpiece() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [f"{c} {s} Hello World" for c in synthetic.COLOURS for s in synthetic.SHAPES]
    tokenizer.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS))
    return tokenizer


def _rewrite_bundle(bundle_dir, tokenizer: Tokenizer) -> None:
    path = bundle_dir / "tokenizer.json.gz"
    path.write_bytes(gzip.compress(tokenizer.to_str().encode()))
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    ids = [tokenizer.token_to_id(t) for t in SPECIALS]
    raw["text"]["tokenizer"].update(clean="whitespace", pad_id=ids[0], bos_id=ids[2],
                                    eos_id=ids[3])
    raw["files"]["tokenizer.json.gz"] = {"sha256": sha256_file(path),
                                         "bytes": path.stat().st_size}
    manifest = Manifest.model_validate(raw)
    files = {name: FileEntry.model_validate(entry) for name, entry in raw["files"].items()}
    raw["fingerprint"] = fingerprint(files, manifest.image, manifest.text,
                                     manifest.variants["fp32"])
    (bundle_dir / "manifest.json").write_text(json.dumps(raw))


async def test_wordpiece_bundle_is_served_unchanged(tmp_path, bundled_model):
    bundle_dir = tmp_path / "wordpiece"
    shutil.copytree(bundled_model, bundle_dir)
    tokenizer = _wordpiece()
    _rewrite_bundle(bundle_dir, tokenizer)
    server = EmbedderServer(embedder_settings(bundle=bundle_dir))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        response = await stub.EmbedTexts(pb.EmbedTextsRequest(texts=[
            pb.TextInput(text="Hello World red"), pb.TextInput(text="Hello " * 100)]))
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    await server.stop(grace=1)
    short, long = response.results
    assert short.HasField("embedding") and long.HasField("embedding")
    assert short.token_count == len(tokenizer.encode("Hello World red").ids) + 2
    assert (long.token_count, long.truncated) == (32, True)
    assert info.model.fingerprint != json.loads(
        (bundled_model / "manifest.json").read_text())["fingerprint"]
