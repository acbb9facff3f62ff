"""components/gpu's optional companions, which no overlay lists: rendered here over the base
with components/gpu, as an install that needs them would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from embedder_service.settings import EmbedderSettings
from tests.deploy.rendered import ROOT, Doc, kubectl
from tests.deploy.test_manifests import assert_tensorrt_only_with_its_image_and_cache

KUSTOMIZE = ROOT / "deploy" / "kubernetes"


def render_with(tmp_path: Path, *components: str) -> list[Doc]:
    relative = os.path.relpath(KUSTOMIZE, tmp_path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{relative}/base"],
        "components": [f"{relative}/components/{c}" for c in ("gpu", *components)]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    output = subprocess.run([kubectl(), "kustomize", str(tmp_path)], check=True,
                            capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(output) if d]


def embedder(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> tuple[Doc, EmbedderSettings]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["metadata"]["name"] == "imagesearch-embedder"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"] == container["envFrom"][0]["configMapRef"]["name"]]
    for name in [n for n in os.environ if n.startswith("EMBEDDER_")]:
        monkeypatch.delenv(name)
    for name, value in config["data"].items():
        monkeypatch.setenv(name, value)
    return deployment, EmbedderSettings()


def test_tensorrt_comes_with_its_image_and_an_engine_cache(tmp_path, monkeypatch):
    deployment, settings = embedder(render_with(tmp_path, "gpu-tensorrt"), monkeypatch)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert settings.providers[0] == "TensorrtExecutionProvider"
    assert_tensorrt_only_with_its_image_and_cache(container, settings)


def test_the_runtime_class_option_sets_nvidias(tmp_path, monkeypatch):
    deployment, _ = embedder(render_with(tmp_path, "gpu-runtime-class"), monkeypatch)
    assert deployment["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
