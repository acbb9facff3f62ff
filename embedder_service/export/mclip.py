"""Exports an M-CLIP text encoder into an existing bundle as an extra text tower.

    imagesearch-export --add-mclip-tower M-CLIP/XLM-Roberta-Large-Vit-B-32 \\
        --bundle models/ViT-B-32-openai --languages de,fr,es,zh,ja

M-CLIP (FreddeFrallan/Multilingual-CLIP) distils CLIP's text tower into a Hugging Face
transformer: its last hidden states are averaged over the attention mask and mapped by one
linear layer into the CLIP model's space (multilingual_clip/pt_multilingual_clip.py,
`MultilingualCLIP.forward`). Its checkpoints hold a config.json naming the transformer's
architecture (`modelBase`) and the layer's sizes (`transformerDimensions`, `numDims`), the
weights (`transformer.*`, `LinearTransformation.*`) and the tokenizer. Only the bundle whose
image tower M-CLIP was distilled against shares its space (XLM-Roberta-Large-Vit-B-32 with
OpenAI's ViT-B/32); the embedding dimension is checked, the rest is the caller's to match.

The graph takes input_ids alone, as every text tower does, and derives the attention mask from
the pad id (XLM-R derives its position ids the same way), so the service feeds it unchanged.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoConfig, AutoTokenizer, XLMRobertaModel

from embedder_service.bundle import (
    ExtraTextTower,
    Manifest,
    TextConfig,
    TokenizerConfig,
    read_manifest,
)
from embedder_service.export import onnx_export
from embedder_service.export.bundle_writer import add_text_tower

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Checkpoint entries the tower does not use: M-CLIP's transformer was built with its pooler,
# and older transformers releases saved the position-id buffer.
UNUSED = ("pooler.", "embeddings.position_ids")


class MClipTower(nn.Module):
    """input_ids int64 [N, L] -> the projected mean of the unpadded hidden states [N, D]."""

    def __init__(self, transformer: XLMRobertaModel, projection: nn.Linear, pad_id: int) -> None:
        super().__init__()
        self.transformer: XLMRobertaModel = transformer
        self.projection = projection
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids.ne(self.pad_id).long()
        hidden = self.transformer(input_ids=input_ids, attention_mask=mask)[0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return self.projection((hidden * weights).sum(dim=1) / weights.sum(dim=1))


def checkpoint_dir(source: str) -> Path:
    """A local checkpoint directory as it is, or a Hub model name downloaded (network)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, allow_patterns=["*.json", "*.model", *WEIGHTS]))


def load_tower(directory: Path) -> tuple[MClipTower, Any]:
    """The tower in eval mode and its Hugging Face tokenizer."""
    config = json.loads((directory / "config.json").read_text("utf-8"))
    base = AutoConfig.from_pretrained(config["modelBase"])
    if base.model_type != "xlm-roberta":
        raise ValueError(f"{directory}: transformer {base.model_type!r} is not supported "
                         "(XLM-RoBERTa only)")
    state = _read_weights(directory)
    transformer = XLMRobertaModel(base, add_pooling_layer=False)
    _load(transformer, {k.removeprefix("transformer."): v for k, v in state.items()
                        if k.startswith("transformer.")}, directory)
    projection = nn.Linear(config["transformerDimensions"], config["numDims"])
    _load(projection, {k.removeprefix("LinearTransformation."): v for k, v in state.items()
                       if k.startswith("LinearTransformation.")}, directory)
    tower = MClipTower(transformer, projection, int(base.pad_token_id))
    return tower.eval(), AutoTokenizer.from_pretrained(directory)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHTS:
        path = directory / name
        if path.is_file() and name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no weights ({' or '.join(WEIGHTS)})")


def _load(module: nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    unexpected = [key for key in unexpected if not key.startswith(UNUSED)]
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not fit {type(module).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")


def tower_config(tokenizer: Any, tower: MClipTower, name: str) -> TextConfig:
    """XLM-R's positions start after the pad id, so it reads max_position_embeddings - pad - 1
    tokens (512 for XLM-R); a text is <s> text </s>, as M-CLIP's tokenizer call makes it."""
    base = tower.transformer.config
    context = base.max_position_embeddings - tower.pad_id - 1
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return TextConfig(context_length=min(context, tokenizer.model_max_length),
                      tokenizer=TokenizerConfig(
                          file=f"text_{name}_tokenizer.json.gz", clean="whitespace",
                          bos_id=bos, eos_id=eos, pad_id=tower.pad_id))


def export_graph(tower: MClipTower, bos: int, eos: int, path: Path) -> None:
    """Writes the graph at `path`, and its weights at `<path>.data` if it is over 2 GB."""
    # A padded row in the example: transformers may leave the attention mask out of a traced
    # graph whose example has no padding.
    example = torch.tensor([[bos, 5, 6, 7, eos, tower.pad_id], [bos, 5, 6, 7, 8, eos]])
    with tempfile.TemporaryDirectory() as scratch:
        traced = Path(scratch) / path.name
        onnx_export.export_text_module(tower, example, traced)
        if len(list(Path(scratch).iterdir())) == 1:
            shutil.move(traced, path)
        else:
            # Over protobuf's 2 GB (XLM-R Large in fp32) torch writes a file per weight
            # beside the graph; a bundle lists one weights file per graph.
            save_with_weights_beside(onnx.load(str(traced)), path)


def save_with_weights_beside(model: onnx.ModelProto, path: Path) -> None:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)


def check_fits(manifest: Manifest, tower: MClipTower, name: str,
               languages: tuple[str, ...]) -> None:
    if tower.projection.out_features != manifest.embedding_dim:
        raise ValueError(f"the tower maps into {tower.projection.out_features} dimensions, the "
                         f"bundle's space has {manifest.embedding_dim}")
    taken = {lang.lower() for lang in manifest.text_languages} | {
        lang.lower() for t in manifest.text_towers if t.name != name for lang in t.languages}
    clash = sorted(lang for lang in languages if lang.lower() in taken)
    if clash:
        raise ValueError(f"languages {clash} are already served by another text tower")


def export_mclip_tower(source: str, bundle_dir: Path, languages: tuple[str, ...],
                       name: str = "mclip") -> Manifest:
    """Adds (or replaces) text tower `name` for `languages` in the bundle at `bundle_dir`."""
    manifest = read_manifest(bundle_dir)
    tower, hf_tokenizer = load_tower(checkpoint_dir(source))
    check_fits(manifest, tower, name, languages)
    config = tower_config(hf_tokenizer, tower, name)
    backend: Tokenizer = hf_tokenizer.backend_tokenizer
    extra = ExtraTextTower(name=name, languages=languages, text=config,
                           variants={"fp32": f"text_{name}_fp32.onnx"})
    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / extra.variants["fp32"]
        export_graph(tower, config.tokenizer.bos_id, config.tokenizer.eos_id, graph)
        return add_text_tower(bundle_dir, extra, backend, {"fp32": graph})
