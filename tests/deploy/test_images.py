"""The container images are the tested install path: the project's wheel, the tested versions,
the same entry points, ports and health checks as the manifests.

No Docker engine runs here, so the slow test below does what the embedder-cpu stage does
(a fresh virtualenv, the image's locked requirements, then the wheel) and then runs the image's
ENTRYPOINT with its ENV and its HEALTHCHECK command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from embedder_service.settings import BUNDLED_MODEL
from tests.deploy.rendered import ROOT, Overlay, container_port
from tests.milvus_server import free_port

DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
# Image target -> the Deployment that runs it.
TARGETS = {"embedder-cpu": "imagesearch-embedder", "embedder-gpu": "imagesearch-embedder",
           "search": "imagesearch-search"}


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments), continuation lines joined, after those of
    the stages it is built FROM (whose ENV and USER it inherits)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction == "FROM":
            base, _, name = arguments.partition(" AS ")
            current = found.setdefault(name, list(found.get(base, [])))
        current.append((instruction, arguments))
    return found


def image_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in stage:
        if instruction == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(arguments))
    return env


def last(stage: list[tuple[str, str]], instruction: str) -> str:
    return [a for i, a in stage if i == instruction][-1]


@pytest.mark.parametrize("target", TARGETS)
def test_image_entrypoint_ports_and_env_match_the_manifests(target):
    stage = stages()[target]
    container = Overlay("smoke").container(TARGETS[target])
    assert json.loads(last(stage, "ENTRYPOINT")) == container["command"]
    exposed = sorted(int(p) for p in last(stage, "EXPOSE").split())
    assert exposed == sorted([container_port(container, "grpc"),
                              container_port(container, "metrics")])
    prefix = "EMBEDDER_" if target.startswith("embedder") else "SEARCH_"
    configured = Overlay("smoke").environment(TARGETS[target])
    for name in ("HOST", "METRICS_HOST", "METRICS_PORT"):
        assert image_env(stage)[prefix + name] == configured[prefix + name]
    assert last(stage, "USER") == "10001:10001"


def test_final_stages_carry_no_build_tools():
    for name in (*TARGETS, "exporter"):
        steps = " ".join(a for i, a in stages()[name] if i == "RUN")
        assert not re.search(r"\b(gcc|g\+\+|build-essential|python3[.0-9]*-venv|pip)\b", steps), (
            name)


# Image target -> the export of uv.lock its virtualenv installs, and how.
LOCKED = {"embedder-cpu": "--require-hashes -r /tmp/requirements/embedder-cpu.txt",
          "embedder-gpu": "--require-hashes -r /tmp/requirements/embedder-gpu.txt",
          "search": "--require-hashes -r /tmp/requirements/search.txt",
          "exporter": "--constraint /tmp/requirements/exporter.txt"}


@pytest.mark.parametrize("target", LOCKED)
def test_each_image_installs_its_locked_requirements_and_the_wheel_alone(target):
    steps = " ".join(a for i, a in stages()[f"{target}-venv"] if i == "RUN")
    assert f"pip install {LOCKED[target]}" in steps
    assert "--require-hashes -r /tmp/requirements/build.txt" in steps
    if target != "exporter":
        assert "pip install --no-deps /wheels/imagesearch-*.whl" in steps
    # Every pip install in the image is locked: hash-checked, constrained, or the wheel itself.
    for install in re.findall(r"pip install ([^&]*)", steps):
        assert re.match(r"(--require-hashes|--constraint|--no-deps /wheels/)", install) or (
            "TENSORRT_LIBS" in install), install
    name = LOCKED[target].split("/tmp/")[1]
    assert (ROOT / name).is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the tests run without network, and the dev environment has setuptools.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir", str(out), str(ROOT)], check=True)
    return next(out.glob("imagesearch-*.whl"))


def test_wheel_carries_the_bundled_model_and_the_entry_points(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    bundle = {f"embedder_service/bundles/{BUNDLED_MODEL.name}/{p.name}"
              for p in BUNDLED_MODEL.iterdir()}
    assert bundle <= names
    for script in ("imagesearch ", "imagesearch-embedder ", "imagesearch-search "):
        assert script in scripts


def image_venv() -> Path:
    venv = ROOT / ".venv-image"
    if not (venv / "bin/imagesearch-embedder").exists():
        reason = "no .venv-image: scripts/image_venv.sh makes it (make test does)"
        if os.environ.get("IMAGESEARCH_REQUIRE_DEPLOY_TOOLS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return venv


def test_the_cpu_image_recipe_serves_and_passes_its_healthcheck(tmp_path):
    venv = image_venv()
    stage = stages()["embedder-cpu"]
    env = image_env(stage)
    env["PATH"] = env["PATH"].replace("/opt/imagesearch/bin", str(venv / "bin")).replace(
        "$PATH", "/usr/bin:/bin")
    env.update(EMBEDDER_HOST="127.0.0.1", EMBEDDER_PORT=str(free_port()),
               EMBEDDER_METRICS_HOST="127.0.0.1", EMBEDDER_METRICS_PORT=str(free_port()))
    # From elsewhere, with the image's environment only: nothing may come from the source tree.
    server = subprocess.Popen(json.loads(last(stage, "ENTRYPOINT")), env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    healthcheck = json.loads(last(stage, "HEALTHCHECK").split("CMD ", 1)[1])
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(healthcheck, env=env, cwd=tmp_path,
                             capture_output=True).returncode != 0:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the image never became healthy"
            time.sleep(1)
    finally:
        server.kill()
        server.wait()
    installed = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--format=json"],
                               check=True, capture_output=True, text=True, env=env).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "onnxruntime" in names and "imagesearch" in names
    # Neither tooling nor the search service's Milvus client in an embedder image.
    assert not names & {"torch", "pymilvus", "milvus-lite", "pyarrow", "pandas"}
