"""scripts/pin_digests.sh, offline: digests from a mapping file, every image of every overlay."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.rendered import OVERLAYS, OVERLAYS_DIR, ROOT, Doc, kubectl, render

SCRIPT = ROOT / "scripts" / "pin_digests.sh"


def pin(*args: str) -> subprocess.CompletedProcess[str]:
    kubectl()  # skips (or fails) as the other deploy tests do without it
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True)


def images_in(value: object) -> list[str]:
    """Every `image` field, anywhere in a document."""
    if isinstance(value, dict):
        found = [str(value["image"])] if isinstance(value.get("image"), str) else []
        return found + [i for v in value.values() for i in images_in(v)]
    if isinstance(value, list):
        return [i for v in value for i in images_in(v)]
    return []


def fake_digest(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_image_is_pinned_to_its_digest_and_nothing_else_changes(name, tmp_path: Path):
    overlay = str(OVERLAYS_DIR / name)
    listed = pin("--list", overlay).stdout.split()
    assert sorted(listed) == sorted({i for d in render(name) for i in images_in(d)})
    mapping = tmp_path / "digests.txt"
    mapping.write_text("# image digest\n" + "".join(f"{i} {fake_digest(i)}\n" for i in listed))
    result = pin("--map", str(mapping), overlay)
    assert result.returncode == 0, result.stderr
    pinned: list[Doc] = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [images_in(d) for d in pinned] == [
        [f"{i}@{fake_digest(i)}" for i in images_in(d)] for d in render(name)]
    unpinned = yaml.safe_dump_all(render(name))
    for image in listed:
        unpinned = unpinned.replace(image, f"{image}@{fake_digest(image)}")
    assert yaml.safe_dump_all(pinned) == unpinned


def test_an_image_without_a_digest_fails_and_is_named(tmp_path: Path):
    overlay = str(OVERLAYS_DIR / "cluster")
    listed = pin("--list", overlay).stdout.split()
    mapping = tmp_path / "digests.txt"
    mapping.write_text("".join(f"{i} {fake_digest(i)}\n" for i in listed[1:]))
    result = pin("--map", str(mapping), overlay)
    assert result.returncode != 0
    assert listed[0] in result.stderr
