"""How each overlay's embedder gets its model: in its image (bundled or baked), or from a volume
that a Job fills. The serving pod never downloads anything (issue 18): the Job does, and the
embedders wait for its bundle without any network of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest

from embedder_service.bundle import MANIFEST_NAME
from tests.deploy.rendered import OVERLAYS, Doc, Overlay

EMBEDDER = "imagesearch-embedder"


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Overlay:
    return Overlay(request.param)


def mount_of(container: Doc, path: PurePosixPath) -> Doc | None:
    """The volume mount that holds `path`, if any."""
    for mount in container.get("volumeMounts", []):
        if path.is_relative_to(mount["mountPath"]):
            return mount
    return None


def claim_volume(pod: Doc, mount: Doc) -> Doc:
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "persistentVolumeClaim" in volume, f"{mount['mountPath']} is not a claim"
    claim: Doc = volume["persistentVolumeClaim"]
    return claim


def bundle_on_a_claim(overlay: Overlay) -> tuple[PurePosixPath, Doc, Doc] | None:
    """(bundle path, its mount, its claim reference) when the embedder serves from a volume."""
    bundle = overlay.environment(EMBEDDER).get("EMBEDDER_BUNDLE")
    if bundle is None:
        return None  # the bundled small model, in the image
    path = PurePosixPath(bundle)
    mount = mount_of(overlay.container(EMBEDDER), path)
    if mount is None:
        return None  # baked into the image (deploy/docker/model.Dockerfile)
    return path, mount, claim_volume(overlay.pod_spec(EMBEDDER), mount)


def test_the_embedder_reads_its_bundle_read_only(overlay):
    found = bundle_on_a_claim(overlay)
    if found is None:
        pytest.skip(f"{overlay.name}: the model is in the image")
    _, mount, claim = found
    assert mount.get("readOnly") is True and claim.get("readOnly") is True


def writers_of(overlay: Overlay, claim_name: str) -> Iterator[tuple[str, Doc, Doc]]:
    """(Job name, container, mount) for every Job container that mounts the claim writable."""
    for job in overlay.of_kind("Job"):
        pod = job["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                volume = volumes[mount["name"]]
                if (volume.get("persistentVolumeClaim", {}).get("claimName") == claim_name
                        and not mount.get("readOnly")):
                    yield job["metadata"]["name"], container, mount


def test_a_job_writes_the_bundle_where_the_embedder_reads_it(overlay):
    found = bundle_on_a_claim(overlay)
    if found is None:
        pytest.skip(f"{overlay.name}: the model is in the image")
    bundle, embedder_mount, claim = found
    relative = bundle.relative_to(embedder_mount["mountPath"])
    writers = list(writers_of(overlay, claim["claimName"]))
    assert writers, f"{overlay.name}: no Job fills claim {claim['claimName']}"
    for job, container, mount in writers:
        written = PurePosixPath(mount["mountPath"]) / relative
        assert str(written) in " ".join(container.get("args", [])), f"{job}: not {written}"


def test_the_claim_can_be_read_from_every_embedder_node(overlay):
    """Embedder replicas run on different nodes (components/gpu spreads them): a ReadWriteOnce
    volume would hold them all on one node, the Job's."""
    found = bundle_on_a_claim(overlay)
    if found is None:
        pytest.skip(f"{overlay.name}: the model is in the image")
    claim = overlay.get("PersistentVolumeClaim", found[2]["claimName"])
    assert set(claim["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}


def test_the_embedder_waits_for_the_manifest_with_its_own_image(overlay):
    """Started before the Job has finished, an embedder would fail on a missing bundle and
    crash-loop; the wait needs only the volume, and the image is already on the node."""
    found = bundle_on_a_claim(overlay)
    if found is None:
        pytest.skip(f"{overlay.name}: the model is in the image")
    bundle, _, claim = found
    pod = overlay.pod_spec(EMBEDDER)
    (wait,) = pod["initContainers"]
    assert wait["image"] == overlay.container(EMBEDDER)["image"]
    mount = mount_of(wait, bundle)
    assert mount is not None and mount.get("readOnly") is True
    assert claim_volume(pod, mount)["claimName"] == claim["claimName"]
    assert str(bundle / MANIFEST_NAME) in " ".join(wait["command"] + wait.get("args", []))
