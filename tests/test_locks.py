"""The installs are locked: the locks match what they lock, the check that says so can fail,
and the environment the tests run in is the locked one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TYPESCRIPT = ROOT / "clients/typescript"
# What scripts/lock.py reads: enough of the tree to check the locks in a copy.
LOCKED_TREE = ("pyproject.toml", "uv.lock", "requirements", "scripts/lock.py",
               "clients/typescript/package.json", "clients/typescript/package-lock.json")


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(root / "scripts/lock.py"), "--check"],
                          capture_output=True, text=True, check=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in LOCKED_TREE:
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_every_lock_and_export_is_current():
    done = check(ROOT)
    assert done.returncode == 0, done.stderr


def test_the_check_passes_on_an_untouched_copy(tree):
    done = check(tree)
    assert done.returncode == 0, done.stderr


def test_a_dependency_edited_without_relocking_fails_the_check(tree):
    edit(tree / "pyproject.toml", '"numpy>=1.26"', '"numpy>=1.26", "six"')
    done = check(tree)
    assert done.returncode == 1
    assert "uv.lock is stale against its pyproject.toml" in done.stderr
    assert "make lock" in done.stderr


def test_a_deploy_tool_edited_without_relocking_fails_the_check(tree):
    edit(tree / "requirements/deploy-tools/pyproject.toml", '"checkov==3.3.30"', '"checkov"')
    done = check(tree)
    assert done.returncode == 1
    assert "requirements/deploy-tools/uv.lock is stale" in done.stderr


def test_a_hand_edited_export_fails_the_check(tree):
    runtime = tree / "requirements/runtime.txt"
    pin = re.search(r"^numpy==[^ ]+", runtime.read_text(), re.MULTILINE)
    assert pin is not None
    edit(runtime, pin.group(), "numpy==1.26.0")
    done = check(tree)
    assert done.returncode == 1
    assert "requirements/runtime.txt is not the export of its uv.lock" in done.stderr


def test_a_package_json_edited_without_relocking_fails_the_check(tree):
    edit(tree / "clients/typescript/package.json", '"typescript": "5.9.3"', '"typescript": "5.9.2"')
    done = check(tree)
    assert done.returncode == 1
    assert "package-lock.json is stale: its devDependencies" in done.stderr


def locked_versions(requirements: Path) -> dict[str, str]:
    """Name -> version for the lines of an exported requirements file that apply here."""
    found = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^ ;]+)(?: ; (.+?))?(?: \\)?$", line)
        if match and (match[3] is None or Marker(match[3]).evaluate()):
            found[canonicalize_name(match[1])] = match[2]
    return found


def test_the_tests_run_with_exactly_the_locked_versions():
    locked = locked_versions(ROOT / "requirements/test.txt")
    assert {"torch", "pymilvus", "grpcio", "onnxruntime", "uv"} <= locked.keys()
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in locked.items()
             if installed.get(name) != version}
    assert not wrong, f"locked != installed (make venv-test reinstalls): {wrong}"


def minimum_major(engines: str) -> int:
    """The oldest Node.js major an npm `engines.node` range admits ('>=20', '^18 || >=20')."""
    majors = [int(m[1]) for part in engines.split("||")
              if (m := re.match(r"\s*(?:>=|\^|~)?\s*v?(\d+)", part))]
    assert majors, f"unreadable engines range {engines!r}"
    return min(majors)


def test_every_locked_npm_package_runs_on_the_documented_node_version():
    documented = minimum_major(json.loads((TYPESCRIPT / "package.json").read_text())
                               ["engines"]["node"])
    packages = json.loads((TYPESCRIPT / "package-lock.json").read_text())["packages"]
    too_new = {name: entry["engines"]["node"] for name, entry in packages.items()
               if "node" in entry.get("engines", {})
               and minimum_major(entry["engines"]["node"]) > documented}
    assert not too_new, f"these need a newer Node.js than {documented}: {too_new}"
    assert "engine-strict=true" in (TYPESCRIPT / ".npmrc").read_text()
