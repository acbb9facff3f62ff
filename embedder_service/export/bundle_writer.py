"""Writes a model bundle: graphs, tokenizer, checksums, fingerprint and manifest."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from embedder_service.bundle import (
    MANIFEST_NAME,
    ExtraTextTower,
    FileEntry,
    ImageConfig,
    Manifest,
    Precision,
    TextConfig,
    Variant,
    fingerprint,
    sha256_file,
)
from embedder_service.export import onnx_export, variants


def export_bundle(
    model: Any,
    out_dir: Path,
    *,
    model_name: str,
    architecture: str,
    pretrained: str | None,
    image: ImageConfig,
    text: TextConfig,
    tokenizer: Tokenizer,
    precisions: tuple[Precision, ...] = ("fp32", "fp16", "int8"),
) -> Manifest:
    """Exports `model` (an open_clip CLIP in eval mode) into `out_dir` and returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_tokenizer(tokenizer, out_dir / text.tokenizer.file)
    image_fp32, text_fp32 = out_dir / "image_fp32.onnx", out_dir / "text_fp32.onnx"
    onnx_export.export_image_tower(model, image.size, image_fp32)
    onnx_export.export_text_tower(model, text.context_length, text_fp32)
    built: dict[Precision, Variant] = {"fp32": Variant(image=image_fp32.name, text=text_fp32.name)}
    for precision in precisions:
        if precision != "fp32":
            built[precision] = _derive(out_dir, precision, image_fp32, text_fp32)
    files = {path.name: FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
             for path in sorted(out_dir.iterdir()) if path.name != MANIFEST_NAME}
    embedding_dim = int(model.text_projection.shape[-1]) if hasattr(model, "text_projection") \
        else int(model.visual.output_dim)
    manifest = Manifest(
        format_version=1, model_name=model_name, architecture=architecture,
        pretrained=pretrained, embedding_dim=embedding_dim, image=image, text=text,
        variants=built, files=files,
        fingerprint=fingerprint(files, image, text, built["fp32"]),
    )
    (out_dir / MANIFEST_NAME).write_text(
        json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return manifest


def _save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    if path.suffix == ".gz":
        # mtime=0: the same tokenizer always gives the same bytes, hence the same fingerprint.
        path.write_bytes(gzip.compress(tokenizer.to_str().encode("utf-8"), mtime=0))
    else:
        tokenizer.save(str(path))


def _derive(out_dir: Path, precision: Precision, image_fp32: Path, text_fp32: Path) -> Variant:
    convert = variants.to_fp16 if precision == "fp16" else variants.to_int8
    image_path, text_path = out_dir / f"image_{precision}.onnx", out_dir / f"text_{precision}.onnx"
    convert(image_fp32, image_path)
    convert(text_fp32, text_path)
    return Variant(image=image_path.name, text=text_path.name)


def add_text_tower(bundle_dir: Path, tower: ExtraTextTower, tokenizer: Tokenizer,
                   graphs: dict[Precision, Path]) -> Manifest:
    """Adds (or replaces) an extra text tower in an existing bundle, leaving the rest as is.

    `graphs` are ONNX files anywhere; they are copied in under the names `tower.variants`
    gives, each with its external weights file `<name>.data` if one lies beside it (a graph
    over protobuf's 2 GB, saved with that location). The fingerprint does not change: the tower
    maps into the bundle's existing space.
    """
    manifest = Manifest.model_validate_json((bundle_dir / MANIFEST_NAME).read_text("utf-8"))
    old = next((t for t in manifest.text_towers if t.name == tower.name), None)
    files = dict(manifest.files)
    for name in _tower_files(old) if old is not None else []:
        files.pop(name, None)
        (bundle_dir / name).unlink(missing_ok=True)
    _save_tokenizer(tokenizer, bundle_dir / tower.text.tokenizer.file)
    for precision, source in graphs.items():
        target = tower.variants[precision]
        shutil.copyfile(source, bundle_dir / target)
        if (sidecar := source.with_name(f"{target}.data")).is_file():
            shutil.copyfile(sidecar, bundle_dir / sidecar.name)
    for name in _tower_files(tower):
        path = bundle_dir / name
        if name.endswith(".data") and not path.is_file():
            continue
        files[name] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    towers = (*(t for t in manifest.text_towers if t.name != tower.name), tower)
    updated = manifest.model_copy(update={"files": dict(sorted(files.items())),
                                          "text_towers": towers})
    (bundle_dir / MANIFEST_NAME).write_text(
        json.dumps(updated.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return updated


def _tower_files(tower: ExtraTextTower) -> list[str]:
    """Its tokenizer, graphs and the external weights files graphs may have."""
    graphs = list(tower.variants.values())
    return [tower.text.tokenizer.file, *graphs, *(f"{graph}.data" for graph in graphs)]
