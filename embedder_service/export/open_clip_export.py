"""Exports an OpenCLIP architecture with its pretrained weights into a model bundle.

Works for CLIP-BPE models (ViT-B-32/openai, ViT-B-16, ViT-L-14, ...) and for models with a
Hugging Face tokenizer (xlm-roberta-base-ViT-B-32): the tokenizer is written as a `tokenizers`
file either way, so the service serves both unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer, default_bpe
from tokenizers import Tokenizer

from embedder_service.bundle import ImageConfig, Manifest, Precision, TextConfig, TokenizerConfig
from embedder_service.export.bundle_writer import export_bundle
from embedder_service.export.clip_bpe import build_clip_tokenizer, clip_special_ids


def image_config(model: Any) -> ImageConfig:
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError(f"non-square image size {size} is not supported")
        size = size[0]
    if cfg.get("resize_mode", "shortest") != "shortest":
        raise ValueError(f"resize mode {cfg['resize_mode']!r} is not supported (only 'shortest')")
    return ImageConfig(size=int(size), interpolation=cfg.get("interpolation", "bicubic"),
                       mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def tokenizer_and_config(arch: str) -> tuple[Tokenizer, TextConfig]:
    reference = open_clip.get_tokenizer(arch)
    context = int(reference.context_length)
    if isinstance(reference, SimpleTokenizer):
        tokenizer = build_clip_tokenizer(Path(default_bpe()))
        sot, eot = clip_special_ids(tokenizer)
        return tokenizer, TextConfig(context_length=context, tokenizer=TokenizerConfig(
            clean="lower", bos_id=sot, eos_id=eot, pad_id=0))
    if isinstance(reference, HFTokenizer):
        hf = reference.tokenizer
        bos = hf.bos_token_id if hf.bos_token_id is not None else hf.cls_token_id
        eos = hf.eos_token_id if hf.eos_token_id is not None else hf.sep_token_id
        return hf.backend_tokenizer, TextConfig(context_length=context, tokenizer=TokenizerConfig(
            clean="whitespace", bos_id=bos, eos_id=eos, pad_id=hf.pad_token_id))
    raise ValueError(f"tokenizer {type(reference).__name__} of {arch} is not supported")


def export_open_clip(
    arch: str, pretrained: str | None, out_dir: Path,
    precisions: tuple[Precision, ...] = ("fp32", "fp16", "int8"),
) -> Manifest:
    """`pretrained=None` gives random weights (for offline tests of the export path)."""
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    model.eval()
    tokenizer, text = tokenizer_and_config(arch)
    return export_bundle(
        model, out_dir, model_name=f"{arch}/{pretrained or 'random-init'}", architecture=arch,
        pretrained=pretrained, image=image_config(model), text=text, tokenizer=tokenizer,
        precisions=precisions)
