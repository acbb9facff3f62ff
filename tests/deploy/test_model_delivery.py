"""How each overlay's embedder gets its model: in its image (bundled or baked), or from a volume
that a Job fills. The serving pod never downloads anything (issue 18): the Job does, and the
embedders wait for its bundle without any network of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest

from embedder_service.bundle import MANIFEST_NAME
from embedder_service.settings import EmbedderSettings
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


def served_bundles(overlay: Overlay) -> list[str]:
    """EMBEDDER_BUNDLE (unset: the bundled small model, in the image) and the extra ones."""
    env = overlay.environment(EMBEDDER)
    extra = EmbedderSettings(extra_bundles=env.get("EMBEDDER_EXTRA_BUNDLES", "")).extra_bundles
    primary = [env["EMBEDDER_BUNDLE"]] if "EMBEDDER_BUNDLE" in env else []
    return primary + [str(path) for path in extra]


def bundles_on_a_claim(overlay: Overlay) -> list[tuple[PurePosixPath, Doc, Doc]]:
    """(bundle path, its mount, its claim reference) of each bundle served from a volume (the
    others are baked into the image: deploy/docker/model.Dockerfile)."""
    found = []
    for bundle in served_bundles(overlay):
        path = PurePosixPath(bundle)
        mount = mount_of(overlay.container(EMBEDDER), path)
        if mount is not None:
            found.append((path, mount, claim_volume(overlay.pod_spec(EMBEDDER), mount)))
    if not found:
        pytest.skip(f"{overlay.name}: the models are in the image")
    return found


def test_the_embedder_reads_its_bundles_read_only(overlay):
    for _, mount, claim in bundles_on_a_claim(overlay):
        assert mount.get("readOnly") is True and claim.get("readOnly") is True


def test_every_bundle_has_a_folder_of_its_own(overlay):
    """Two bundles in one folder would be one model served twice: start-up refuses it."""
    bundles = served_bundles(overlay)
    assert len(set(bundles)) == len(bundles)


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


def test_a_job_writes_each_bundle_where_the_embedder_reads_it(overlay):
    for bundle, embedder_mount, claim in bundles_on_a_claim(overlay):
        relative = bundle.relative_to(embedder_mount["mountPath"])
        writers = list(writers_of(overlay, claim["claimName"]))
        assert writers, f"{overlay.name}: no Job fills claim {claim['claimName']}"
        assert any(str(PurePosixPath(mount["mountPath"]) / relative)
                   in " ".join(container.get("args", [])) for _, container, mount in writers), \
            f"{overlay.name}: no Job writes {bundle}"


def test_the_claim_can_be_read_from_every_embedder_node(overlay):
    """Embedder replicas run on different nodes (components/gpu spreads them): a ReadWriteOnce
    volume would hold them all on one node, the Job's."""
    for _, _, reference in bundles_on_a_claim(overlay):
        claim = overlay.get("PersistentVolumeClaim", reference["claimName"])
        assert set(claim["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}


def test_the_embedder_waits_for_every_manifest_with_its_own_image(overlay):
    """Started before the Jobs have finished, an embedder would fail on a missing bundle and
    crash-loop; the wait needs only the volume, and the image is already on the node."""
    pod = overlay.pod_spec(EMBEDDER)
    for bundle, _, claim in bundles_on_a_claim(overlay):
        (wait,) = pod["initContainers"]
        assert wait["image"] == overlay.container(EMBEDDER)["image"]
        mount = mount_of(wait, bundle)
        assert mount is not None and mount.get("readOnly") is True
        assert claim_volume(pod, mount)["claimName"] == claim["claimName"]
        assert str(bundle / MANIFEST_NAME) in " ".join(wait["command"] + wait.get("args", []))
