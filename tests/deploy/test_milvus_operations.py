"""Running Milvus as the overlays deploy it: coordinator failover, monitoring and alerts,
backups."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from urllib.parse import urlparse

import pytest
import yaml

from tests.deploy.rendered import OVERLAYS, Doc, Overlay, selects

COORDINATORS = ("mixCoord", "rootCoord", "dataCoord", "queryCoord", "indexCoord")


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Overlay:
    return Overlay(request.param)


def operator_pod_labels(cr: Doc) -> dict[str, str]:
    """The labels the Milvus Operator puts on every pod of a Milvus resource."""
    return {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": cr["metadata"][
        "name"]}


def scrape_jobs(overlay: Overlay) -> Iterator[str]:
    """The job label of what each ServiceMonitor and PodMonitor scrapes."""
    for monitor in overlay.of_kind("ServiceMonitor"):
        for service in overlay.of_kind("Service"):
            if selects(monitor["spec"]["selector"], service["metadata"].get("labels", {})):
                job_label = monitor["spec"].get("jobLabel")
                yield (service["metadata"]["labels"][job_label] if job_label
                       else service["metadata"]["name"])
    for monitor in overlay.of_kind("PodMonitor"):
        for cr in overlay.of_kind("Milvus"):
            labels = operator_pod_labels(cr)
            if selects(monitor["spec"]["selector"], labels):
                yield labels[monitor["spec"]["jobLabel"]]


def test_several_coordinators_run_active_standby(overlay):
    for cr in overlay.of_kind("Milvus"):
        if cr["spec"]["components"].get("mixCoord", {}).get("replicas", 1) > 1:
            config = cr["spec"]["config"]
            for coordinator in COORDINATORS:
                assert config[coordinator]["enableActiveStandby"] is True, coordinator


def test_milvus_is_scraped_once_and_where_its_metrics_port_is_open(overlay):
    for cr in overlay.of_kind("Milvus"):
        monitors = [m for m in overlay.of_kind("PodMonitor")
                    if selects(m["spec"]["selector"], operator_pod_labels(cr))]
        if not monitors:
            continue
        assert len(monitors) == 1
        # The operator's own PodMonitor would scrape every pod a second time.
        assert cr["spec"]["components"]["disableMetric"] is True
        assert [e["port"] for e in monitors[0]["spec"]["podMetricsEndpoints"]] == ["metrics"]
        policy = overlay.get("NetworkPolicy", "milvus")["spec"]
        assert selects(policy["podSelector"], operator_pod_labels(cr))
        assert any(p["port"] == 9091 for rule in policy["ingress"] for p in rule.get("ports", [])
                   if any("namespaceSelector" in s for s in rule["from"]))


def test_every_alert_watches_a_scraped_job(overlay):
    jobs = set(scrape_jobs(overlay))
    for prometheus_rule in overlay.of_kind("PrometheusRule"):
        for group in prometheus_rule["spec"]["groups"]:
            for rule in group["rules"]:
                for job in re.findall(r'job="([^"]+)"', rule["expr"]):
                    assert job in jobs, f"{overlay.name}: {rule['alert']} watches {job}"


def test_milvus_has_alerts_wherever_it_is_monitored(overlay):
    if not any(overlay.of_kind("PrometheusRule")):
        pytest.skip(f"{overlay.name}: no monitoring")
    assert "milvus" in set(scrape_jobs(overlay))
    alerts = overlay.get("PrometheusRule", "milvus")["spec"]["groups"][0]["rules"]
    assert {"MilvusDown", "MilvusRequestErrors", "MilvusSearchSlow"} <= {
        a["alert"] for a in alerts}


def backup_of(overlay: Overlay) -> tuple[Doc, Doc, Doc]:
    """(the Milvus resource, the backup CronJob's container, its backup.yaml)."""
    crs = list(overlay.of_kind("Milvus"))
    if not crs:
        pytest.skip(f"{overlay.name}: Milvus standalone is backed up by volume snapshots")
    cron = overlay.get("CronJob", "milvus-backup")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    config = yaml.safe_load(overlay.get("ConfigMap", volume["configMap"]["name"])["data"][
        "backup.yaml"])
    return crs[0], container, config


def test_backups_read_the_bucket_milvus_writes_and_reach_it_over_tls(overlay):
    cr, container, config = backup_of(overlay)
    assert {k: config["minio"][k] for k in ("bucketName", "rootPath")} == cr["spec"][
        "config"]["minio"]
    assert config["minio"]["address"] == f"{cr['metadata']['name']}-minio"
    assert (config["milvus"]["address"], config["milvus"]["port"]) == (
        f"{cr['metadata']['name']}-milvus", 19530)
    assert config["milvus"]["tlsMode"] == cr["spec"]["config"]["common"]["security"]["tlsMode"]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert str(PurePosixPath(config["milvus"]["caCertPath"]).parent) in mounts


def test_backup_credentials_come_from_the_installs_secrets(overlay):
    cr, container, config = backup_of(overlay)
    assert "password" not in config["milvus"]
    assert not {"accessKeyID", "secretAccessKey", "backupAccessKeyID",
                "backupSecretAccessKey"} & set(config["minio"])
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    minio = cr["spec"]["dependencies"]["storage"]["inCluster"]["values"]["existingSecret"]
    assert secrets == {"MILVUS_PASSWORD": "milvus-root", "MINIO_ACCESS_KEY": minio,
                       "MINIO_SECRET_KEY": minio, "MINIO_BACKUP_ACCESS_KEY": minio,
                       "MINIO_BACKUP_SECRET_KEY": minio}


def test_network_policies_let_backups_reach_milvus_and_minio(overlay):
    cr, _, config = backup_of(overlay)
    backup = {"app.kubernetes.io/name": "milvus-backup"}
    milvus = operator_pod_labels(cr)
    minio = {"app": "minio", "release": f"{cr['metadata']['name']}-minio"}
    gc_port = urlparse(config["backup"]["gcPause"]["address"]).port
    for target, ports in ((milvus, {19530, gc_port}), (minio, {config["minio"]["port"]})):
        for direction, side, mine, theirs in (("egress", "to", backup, target),
                                              ("ingress", "from", target, backup)):
            opened = {p["port"] for policy in overlay.of_kind("NetworkPolicy")
                      if selects(policy["spec"]["podSelector"], mine)
                      for rule in policy["spec"].get(direction, [])
                      if any(selects(peer.get("podSelector", {}), theirs)
                             and "namespaceSelector" not in peer for peer in rule[side])
                      for p in rule.get("ports", [])}
            assert ports <= opened, f"{direction} {target}: {opened}"
