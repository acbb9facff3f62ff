"""Running Milvus as the overlays deploy it: coordinator failover, monitoring and alerts."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

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
