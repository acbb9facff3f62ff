"""The model bundle: one directory with both towers as ONNX graphs, the tokenizer and a manifest.

Layout (written by embedder_service.export, read here):

    manifest.json        what follows, validated by `Manifest`
    tokenizer.json.gz    a Hugging Face `tokenizers` file (CLIP BPE or any other), gzipped
    image_fp32.onnx      pixel_values float32 [N, 3, S, S] -> embedding float32 [N, D]
    text_fp32.onnx       input_ids int64 [N, L] -> embedding float32 [N, D], L <= context_length
    image_int8.onnx ...  optional precision variants with the same inputs and outputs

A bundle may carry extra text towers over the same image space (`text_towers`: e.g. a
multilingual tower distilled from the English one), each with its own graphs, tokenizer, context
length and the languages (BCP 47) it serves. They are left out of the fingerprint on purpose: the
fingerprint names the vector space, which the image tower and the default text tower define, and
a tower added later maps into that same space (no collection needs re-indexing).

Every file is listed in the manifest with its size and SHA-256, so a partial copy or a corrupt
file is caught at start-up with a message naming it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedder_service.errors import BundleError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
Precision = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageConfig(_Strict):
    size: int = Field(gt=0, description="Side of the square input, in pixels.")
    resize_mode: Literal["shortest"] = "shortest"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class TokenizerConfig(_Strict):
    # A `tokenizers` JSON file; gzip-compressed when the name ends in .gz.
    file: str = "tokenizer.json.gz"
    # Text cleaning before tokenisation, as open_clip names it: "lower" (CLIP BPE) or
    # "whitespace" (case-sensitive Hugging Face tokenizers).
    clean: Literal["lower", "whitespace"]
    bos_id: int = Field(ge=0)
    eos_id: int = Field(ge=0)
    pad_id: int = Field(ge=0)


class TextConfig(_Strict):
    context_length: int = Field(gt=2)
    tokenizer: TokenizerConfig


# A BCP 47 tag as a bundle declares it: a language subtag, optionally with script or region
# subtags ("de", "zh", "zh-Hant", "pt-BR"); matched case-insensitively.
LANGUAGE_TAG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
DEFAULT_TOWER = "default"


class ExtraTextTower(_Strict):
    """A text tower beside the default one, mapping texts into the same embedding space."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    languages: tuple[str, ...] = Field(min_length=1)
    text: TextConfig
    # Graph per precision; fp32 is required and serves a precision the tower lacks (the
    # tower is small next to the image tower, so running it in fp32 costs little).
    variants: dict[Precision, str]


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Variant(_Strict):
    image: str
    text: str


class Manifest(_Strict):
    format_version: Literal[1]
    model_name: str = Field(min_length=1)
    architecture: str
    pretrained: str | None = None
    embedding_dim: int = Field(gt=0)
    image: ImageConfig
    text: TextConfig
    variants: dict[Precision, Variant]
    files: dict[str, FileEntry]
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    # Languages the default text tower serves (BCP 47); outside the fingerprint (see the top).
    text_languages: tuple[str, ...] = ("en",)
    text_towers: tuple[ExtraTextTower, ...] = ()


class Bundle:
    """A validated bundle on disk."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    def path(self, name: str) -> Path:
        return self.root / name

    def variant(self, precision: Precision) -> Variant:
        try:
            return self.manifest.variants[precision]
        except KeyError:
            have = ", ".join(sorted(self.manifest.variants))
            raise BundleError(
                f"{self.root / MANIFEST_NAME}: no {precision} variant in this bundle "
                f"(it has: {have})"
            ) from None


    def tower_graph(self, tower: ExtraTextTower, precision: Precision) -> Path:
        """The tower's graph for `precision`, or its fp32 graph when it has no such variant."""
        return self.root / tower.variants.get(precision, tower.variants["fp32"])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(files: dict[str, FileEntry], image: ImageConfig, text: TextConfig,
                fp32: Variant) -> str:
    """Identifies the vector space: the fp32 weights, the tokenizer and the preprocessing.

    Precision variants are left out on purpose: they approximate the same weights, so vectors
    from an int8 CPU replica and an fp16 GPU replica may share a collection.
    """
    identity = {
        "image_fp32": files[fp32.image].sha256,
        "text_fp32": files[fp32.text].sha256,
        "tokenizer": files[text.tokenizer.file].sha256,
        "image": image.model_dump(mode="json"),
        "text": text.model_dump(mode="json"),
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def load_bundle(root: Path, *, verify_checksums: bool = True) -> Bundle:
    """Reads and checks a bundle; raises BundleError naming the file and the fault."""
    root = root.expanduser().resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: model bundle directory does not exist")
    manifest = _read_manifest(root / MANIFEST_NAME)
    _check_references(root, manifest)
    _check_towers(root, manifest)
    for name, entry in manifest.files.items():
        _check_file(root / name, entry, verify_checksums)
    _check_fingerprint(root, manifest)
    return Bundle(root, manifest)


def read_manifest(root: Path) -> Manifest:
    """The bundle's manifest alone, checking no other file (cheap: start-up reads every served
    bundle's first, to refuse duplicates before any loads); load_bundle checks the rest."""
    root = root.expanduser().resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: model bundle directory does not exist")
    return _read_manifest(root / MANIFEST_NAME)


def _check_fingerprint(root: Path, manifest: Manifest) -> None:
    """The fingerprint is derived from the files' checksums, which _check_file verified
    against the files: a hand-edited fingerprint, or one copied from another model, would
    label a collection's vector space wrongly (and let two spaces share a collection)."""
    fp32 = manifest.variants.get("fp32")
    if fp32 is None:
        raise BundleError(f"{root / MANIFEST_NAME}: no fp32 variant, from which the "
                          "fingerprint is derived; export the bundle again")
    derived = fingerprint(manifest.files, manifest.image, manifest.text, fp32)
    if manifest.fingerprint != derived:
        raise BundleError(f"{root / MANIFEST_NAME}: fingerprint {manifest.fingerprint} is not "
                          f"this bundle's ({derived}): the manifest was edited or mixes two "
                          "models; export the bundle again")


def _read_manifest(path: Path) -> Manifest:
    if not path.is_file():
        raise BundleError(f"{path}: manifest is missing; is this a model bundle directory?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path}: manifest is not valid JSON ({err})") from None
    if isinstance(raw, dict) and raw.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported "
            f"(this server reads {FORMAT_VERSION})"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise BundleError(f"{path}: manifest is invalid: {problems}") from None


def _check_towers(root: Path, manifest: Manifest) -> None:
    """Tower names are unique and each language has one tower, so routing is unambiguous."""
    names = [DEFAULT_TOWER, *(tower.name for tower in manifest.text_towers)]
    if len(set(names)) != len(names):
        raise BundleError(f"{root / MANIFEST_NAME}: text tower names {names} are not unique "
                          f"({DEFAULT_TOWER!r} is the default tower's)")
    languages = [lang.lower() for lang in manifest.text_languages]
    for tower in manifest.text_towers:
        if "fp32" not in tower.variants:
            raise BundleError(f"{root / MANIFEST_NAME}: text tower {tower.name!r} has no fp32 "
                              "graph")
        languages.extend(lang.lower() for lang in tower.languages)
    for lang in manifest.text_languages + tuple(
            lang for tower in manifest.text_towers for lang in tower.languages):
        if not re.match(LANGUAGE_TAG, lang):
            raise BundleError(f"{root / MANIFEST_NAME}: {lang!r} is not a BCP 47 language tag")
    twice = sorted({lang for lang in languages if languages.count(lang) > 1})
    if twice:
        raise BundleError(f"{root / MANIFEST_NAME}: languages {twice} are served by more than "
                          "one text tower")


def _check_references(root: Path, manifest: Manifest) -> None:
    referenced = {manifest.text.tokenizer.file}
    for variant in manifest.variants.values():
        referenced.update((variant.image, variant.text))
    for tower in manifest.text_towers:
        referenced.update((tower.text.tokenizer.file, *tower.variants.values()))
    for name in sorted(referenced | set(manifest.files)):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{root / MANIFEST_NAME}: file name {name!r} leaves the bundle")
    unlisted = referenced - set(manifest.files)
    if unlisted:
        raise BundleError(
            f"{root / MANIFEST_NAME}: files {sorted(unlisted)} are used but have no checksum entry"
        )


def _check_file(path: Path, entry: FileEntry, verify_checksums: bool) -> None:
    if not path.is_file():
        raise BundleError(f"{path}: file is missing (the bundle is partial; copy it again)")
    size = path.stat().st_size
    if size != entry.bytes:
        raise BundleError(
            f"{path}: file is {size} bytes, the manifest says {entry.bytes} "
            "(truncated or replaced; copy the bundle again)"
        )
    if verify_checksums:
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise BundleError(
                f"{path}: file is corrupt: SHA-256 is {actual}, the manifest says {entry.sha256}"
            )
