"""The Kubernetes overlays as kubectl renders them, with lookups the deploy tests share."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS_DIR = ROOT / "deploy" / "kubernetes" / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if p.is_dir())

Doc = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        reason = "kubectl (with its built-in kustomize) is needed to render deploy/kubernetes"
        if os.environ.get("IMAGESEARCH_REQUIRE_DEPLOY_TOOLS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    output = subprocess.run([kubectl(), "kustomize", str(OVERLAYS_DIR / overlay)], check=True,
                            capture_output=True, text=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


class Overlay:
    """One rendered overlay."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.docs = render(name)

    def of_kind(self, kind: str) -> Iterator[Doc]:
        return (d for d in self.docs if d["kind"] == kind)

    def get(self, kind: str, name: str) -> Doc:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def config_map(self, prefix: str) -> Doc:
        """A generated ConfigMap by its name before kustomize's hash suffix."""
        found = [d for d in self.of_kind("ConfigMap")
                 if re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])]
        assert len(found) == 1, f"{self.name}: no single ConfigMap {prefix}"
        return found[0]

    def pod_templates(self) -> Iterator[tuple[str, Doc]]:
        """(workload name, pod template) of every Deployment, StatefulSet, Job and CronJob."""
        for doc in self.docs:
            spec = doc.get("spec", {})
            if doc["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            elif doc["kind"] not in WORKLOAD_KINDS:
                continue
            yield doc["metadata"]["name"], spec["template"]

    def pod_spec(self, workload: str) -> Doc:
        for kind in ("Deployment", "StatefulSet"):
            for doc in self.of_kind(kind):
                if doc["metadata"]["name"] == workload:
                    spec: Doc = doc["spec"]["template"]["spec"]
                    return spec
        raise AssertionError(f"{self.name}: no workload {workload}")

    def container(self, workload: str) -> Doc:
        containers = self.pod_spec(workload)["containers"]
        assert len(containers) == 1
        container: Doc = containers[0]
        return container

    def environment(self, workload: str) -> dict[str, str]:
        """The container's variables: its ConfigMaps, then its literal env entries."""
        container = self.container(workload)
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            name = source["configMapRef"]["name"]
            env.update(self.get("ConfigMap", name)["data"])
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        return env


def container_port(container: Doc, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(ports[name])


def probe_target(probe: Doc) -> tuple[int, str]:
    """The port and grpc.health.v1 service a probe checks: the kubelet's own grpc probe, or,
    where the port speaks TLS, components/tls' exec probe (grpc-probe.py PORT SERVICE NAME)."""
    if "grpc" in probe:
        return int(probe["grpc"]["port"]), str(probe["grpc"].get("service", ""))
    command = probe["exec"]["command"]
    assert command[:2] == ["python", "/etc/imagesearch/probe/grpc-probe.py"], command
    return int(command[2]), str(command[3])


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
