"""The TypeScript client (clients/typescript) end to end: its Node.js test suite runs against
the real search service and embedder started here (bundled model, Milvus Lite)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from imagesearch import synthetic
from tests.search_fixtures import MilvusBackend

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "typescript"
SCENES = {
    "red-circle": synthetic.Scene("red", "circle", 1, "large", "center", "white"),
    "blue-square": synthetic.Scene("blue", "square", 1, "large", "center", "white"),
    "green-triangle": synthetic.Scene("green", "triangle", 1, "large", "center", "white"),
    "yellow-star": synthetic.Scene("yellow", "star", 1, "large", "center", "white"),
}


@pytest.fixture(scope="module")
def milvus_backend(tmp_path_factory: pytest.TempPathFactory) -> MilvusBackend:
    """Milvus Lite only: this suite is about the client, and the server runs the rest."""
    return MilvusBackend("lite", tmp_path_factory, None)


def write_samples(folder: Path) -> Path:
    rng = random.Random(5)
    manifest = []
    for sample_id, scene in SCENES.items():
        synthetic.render(scene, 128, rng).save(folder / f"{sample_id}.png")
        manifest.append({"id": sample_id, "file": f"{sample_id}.png", "colour": scene.colour,
                         "shape": scene.shape})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def node_ready() -> bool:
    if shutil.which("npm") and (CLIENT / "node_modules").is_dir():
        return True
    reason = "Node.js/npm or clients/typescript/node_modules missing: run `make test`"
    if os.environ.get("IMAGESEARCH_REQUIRE_NODE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


async def test_typescript_client_end_to_end(search, tmp_path):
    node_ready()
    server, _ = search
    env = {**os.environ, "IMAGESEARCH_SEARCH_ADDRESS": f"127.0.0.1:{server.port}",
           "IMAGESEARCH_SAMPLES": str(write_samples(tmp_path))}
    # Not subprocess.run: the services under test answer on this very event loop.
    process = await asyncio.create_subprocess_exec(
        "npm", "test", "--silent", cwd=CLIENT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "# fail 0" in text and "# pass 7" in text, text
