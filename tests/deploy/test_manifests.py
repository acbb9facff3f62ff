"""Every overlay agrees with the services it deploys: settings, ports, probes, shutdown, safety.

The manifests name environment variables, ports and health service names that the code
defines; these tests read both sides so that neither can change alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from pydantic_settings import BaseSettings

from embedder_service.server import SERVICE as EMBEDDER_SERVICE
from embedder_service.settings import EmbedderSettings
from imagesearch.serving.grpc_server import LIVENESS
from search_service.server import SERVICE as SEARCH_SERVICE
from search_service.settings import SearchSettings
from tests.deploy.rendered import (
    OVERLAYS,
    ROOT,
    Overlay,
    container_port,
    probe_target,
    selects,
)

# Deployment -> (its settings class, their environment prefix, its gRPC service).
SERVICES = {
    "imagesearch-embedder": (EmbedderSettings, "EMBEDDER_", EMBEDDER_SERVICE.full_name),
    "imagesearch-search": (SearchSettings, "SEARCH_", SEARCH_SERVICE.full_name),
}
ADAPTER_RULES = ROOT / "deploy/kubernetes/components/gpu/prometheus-adapter-rules.yaml"


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Overlay:
    return Overlay(request.param)


def settings_from(env: dict[str, str], cls: type[BaseSettings], prefix: str,
                  monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    """The settings the service would build in the pod, from exactly this environment."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(prefix)]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return cls()


@pytest.mark.parametrize("workload", SERVICES)
def test_every_variable_is_a_setting_and_every_value_parses(overlay, workload, monkeypatch):
    cls, prefix, _ = SERVICES[workload]
    env = overlay.environment(workload)
    unknown = [n for n in env if not n.startswith(prefix)
               or n.removeprefix(prefix).lower() not in cls.model_fields]
    assert not unknown, f"{overlay.name}/{workload}: no such settings {unknown}"
    settings_from(env, cls, prefix, monkeypatch)  # raises on a value the service would refuse


@pytest.mark.parametrize("workload", SERVICES)
def test_ports_and_probes_are_the_services_own(overlay, workload, monkeypatch):
    cls, prefix, service_name = SERVICES[workload]
    settings = settings_from(overlay.environment(workload), cls, prefix, monkeypatch)
    container = overlay.container(workload)
    grpc_port = container_port(container, "grpc")
    assert grpc_port == settings.port  # type: ignore[attr-defined]
    assert container_port(container, "metrics") == settings.metrics_port  # type: ignore[attr-defined]
    # HTTP/JSON where it is on: HTTPS where the gRPC port has TLS (components/tls).
    if isinstance(settings, SearchSettings) and settings.http_port is not None:
        scheme = "https" if settings.tls_cert_file is not None else "http"
        assert container_port(container, scheme) == settings.http_port
        service = overlay.get("Service", workload)
        assert {"name": scheme, "port": settings.http_port, "targetPort": scheme,
                "appProtocol": scheme} in service["spec"]["ports"]
    assert settings.host == "0.0.0.0"  # type: ignore[attr-defined]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe_target(container[probe])[0] == grpc_port, probe
    assert probe_target(container["readinessProbe"])[1] == service_name
    assert probe_target(container["livenessProbe"])[1] == LIVENESS


def test_the_embedder_starts_ready_and_search_starts_alive(overlay):
    # The embedder's port opens before the model loads: startup waits for the model. The
    # search service must not wait for the embedder to start, or a cold start deadlocks.
    embedder = overlay.container("imagesearch-embedder")["startupProbe"]
    assert probe_target(embedder)[1] == EMBEDDER_SERVICE.full_name
    assert embedder["periodSeconds"] * embedder["failureThreshold"] >= 300
    search = overlay.container("imagesearch-search")["startupProbe"]
    assert probe_target(search)[1] == LIVENESS


@pytest.mark.parametrize("workload", SERVICES)
def test_termination_grace_outlasts_the_drain(overlay, workload, monkeypatch):
    cls, prefix, _ = SERVICES[workload]
    settings = settings_from(overlay.environment(workload), cls, prefix, monkeypatch)
    pod = overlay.pod_spec(workload)
    pre_stop = overlay.container(workload)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(pre_stop[1]) + settings.shutdown_grace_s  # type: ignore[attr-defined]
    assert pod["terminationGracePeriodSeconds"] >= drain + 10


def test_pods_run_locked_down(overlay):
    """Every pod of ours: the services, Milvus standalone, the model export and backup Jobs."""
    for workload, template in overlay.pod_templates():
        where = f"{overlay.name}/{workload}"
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        # Service links would add variables like EMBEDDER_PORT=tcp://10.0.0.1:50051.
        assert pod["enableServiceLinks"] is False, where
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "memory" in container["resources"]["limits"], where


def test_onnx_runtime_threads_fit_the_cpu_limit(overlay, monkeypatch):
    settings = settings_from(overlay.environment("imagesearch-embedder"), EmbedderSettings,
                             "EMBEDDER_", monkeypatch)
    limits = overlay.container("imagesearch-embedder")["resources"]["limits"]
    # 0 would mean one thread per core of the node, not of the pod.
    assert 0 < settings.intra_op_threads <= float(limits["cpu"])


def test_gpu_pods_run_the_gpu_image_on_gpu_nodes(overlay, monkeypatch):
    pod = overlay.pod_spec("imagesearch-embedder")
    container = overlay.container("imagesearch-embedder")
    settings = settings_from(overlay.environment("imagesearch-embedder"), EmbedderSettings,
                             "EMBEDDER_", monkeypatch)
    tag = container["image"].rsplit(":", 1)[1]
    if "nvidia.com/gpu" not in container["resources"]["limits"]:
        assert tag.endswith("-cpu") and not settings.require_gpu
        return
    assert "-gpu" in tag and settings.require_gpu
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod["tolerations"])
    assert_tensorrt_only_with_its_image_and_cache(container, settings)


def assert_tensorrt_only_with_its_image_and_cache(container: dict,
                                                  settings: EmbedderSettings) -> None:
    """The GPU image has no TensorRT (components/gpu-tensorrt's image has): its provider, and
    a cache for its engines, only with that image."""
    tensorrt = "TensorrtExecutionProvider" in settings.providers
    assert tensorrt == container["image"].endswith("-tensorrt"), container["image"]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    if tensorrt:
        assert settings.trt_cache_dir is not None and str(settings.trt_cache_dir) in mounts
    else:
        assert settings.trt_cache_dir is None


def test_the_embedder_scales_on_cpu_without_the_metrics_adapter(overlay):
    """The HPA scales up on any metric it can read: with prometheus-adapter missing, CPU from
    metrics-server still adds replicas."""
    scaler = overlay.get("HorizontalPodAutoscaler", "imagesearch-embedder")["spec"]
    cpu = [m["resource"]["target"] for m in scaler["metrics"]
           if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["type"] == "Utilization"


def test_gpu_embedders_never_share_a_node_below_one_per_node(overlay):
    pod = overlay.pod_spec("imagesearch-embedder")
    if "nvidia.com/gpu" not in overlay.container("imagesearch-embedder")["resources"]["limits"]:
        pytest.skip(f"{overlay.name}: CPU embedders")
    (by_node,) = [c for c in pod["topologySpreadConstraints"]
                  if c["topologyKey"] == "kubernetes.io/hostname"]
    scaler = overlay.get("HorizontalPodAutoscaler", "imagesearch-embedder")["spec"]
    assert by_node["whenUnsatisfiable"] == "DoNotSchedule" and by_node["maxSkew"] == 1
    assert by_node["minDomains"] >= scaler["minReplicas"]


def test_search_reaches_the_embedder_through_its_headless_service(overlay, monkeypatch):
    settings = settings_from(overlay.environment("imagesearch-search"), SearchSettings,
                             "SEARCH_", monkeypatch)
    match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", settings.embedder_target)
    assert match, settings.embedder_target
    service = overlay.get("Service", match[1])
    assert service["spec"]["clusterIP"] == "None"  # every pod's address, for round_robin
    port = {p["port"]: p for p in service["spec"]["ports"]}[int(match[2])]
    embedder = overlay.container("imagesearch-embedder")
    assert container_port(embedder, port["targetPort"]) == int(match[2])
    embedder_settings = settings_from(overlay.environment("imagesearch-embedder"),
                                      EmbedderSettings, "EMBEDDER_", monkeypatch)
    # New embedder replicas get traffic only once connections are re-established.
    assert embedder_settings.max_connection_age_s
    # Frozen replicas leave the rotation through keepalive, which the embedder must allow:
    # twice its minimum interval, as gRPC counts a ping that arrives a little early a strike.
    assert settings.embedder_keepalive_s >= 2 * embedder_settings.min_client_ping_interval_s


def test_in_cluster_callers_can_spread_calls_over_every_search_pod(overlay, monkeypatch):
    settings = settings_from(overlay.environment("imagesearch-search"), SearchSettings,
                             "SEARCH_", monkeypatch)
    service = overlay.get("Service", "imagesearch-search-headless")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = overlay.get("Deployment", "imagesearch-search")["spec"]["template"]["metadata"][
        "labels"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    (port,) = service["spec"]["ports"]
    search = overlay.container("imagesearch-search")
    assert container_port(search, port["targetPort"]) == port["port"] == settings.port
    # Clients re-resolve, and so find new replicas, only when their connection is closed.
    assert settings.max_connection_age_s


def test_search_points_at_the_overlays_milvus(overlay, monkeypatch):
    settings = settings_from(overlay.environment("imagesearch-search"), SearchSettings,
                             "SEARCH_", monkeypatch)
    uri = urlparse(settings.milvus_uri)
    assert uri.scheme in ("http", "https") and uri.port == 19530
    milvus_crs = list(overlay.of_kind("Milvus"))
    if milvus_crs:  # the Milvus Operator serves a cluster's proxies as <name>-milvus
        assert [f"{cr['metadata']['name']}-milvus" for cr in milvus_crs] == [uri.hostname]
        assert milvus_crs[0]["spec"]["mode"] == "cluster"
        assert settings.milvus_token_file is not None
        return
    service = overlay.get("Service", str(uri.hostname))
    assert 19530 in [p["port"] for p in service["spec"]["ports"]]


def test_network_policies_open_exactly_the_service_ports(overlay, monkeypatch):
    embedder = settings_from(overlay.environment("imagesearch-embedder"), EmbedderSettings,
                             "EMBEDDER_", monkeypatch)
    search = settings_from(overlay.environment("imagesearch-search"), SearchSettings,
                           "SEARCH_", monkeypatch)
    policy = overlay.get("NetworkPolicy", "imagesearch-embedder")["spec"]
    from_search = [r for r in policy["ingress"] if any(
        p.get("podSelector", {}).get("matchLabels") == {
            "app.kubernetes.io/name": "imagesearch-search"} for p in r.get("from", []))]
    assert [p["port"] for r in from_search for p in r["ports"]] == [embedder.port]
    policy = overlay.get("NetworkPolicy", "imagesearch-search")["spec"]
    assert policy["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": port} for port in (search.port, search.http_port) if port]
    egress_ports = sorted(p["port"] for r in policy["egress"] for p in r["ports"])
    image_store = urlparse(search.image_store_endpoint or "")
    assert egress_ports == sorted([embedder.port, urlparse(search.milvus_uri).port,
                                   *([image_store.port] if image_store.port else [])])
    deny = overlay.get("NetworkPolicy", "imagesearch-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    for workload, template in overlay.pod_templates():
        assert selects(deny["podSelector"], template["metadata"]["labels"]), workload


def test_an_object_store_image_store_is_shared_and_its_keys_come_from_a_secret(overlay,
                                                                              monkeypatch):
    """Several search replicas over a Milvus server: a folder image store would be one per pod
    (copy signals written by one replica missing on the others)."""
    search = settings_from(overlay.environment("imagesearch-search"), SearchSettings,
                           "SEARCH_", monkeypatch)
    location = search.image_location()
    if location is None:
        return
    if not isinstance(location, str):
        assert urlparse(search.milvus_uri).scheme == "", "a folder store beside a Milvus server"
        return
    assert location.startswith("s3://")
    assert search.image_store_endpoint
    container = overlay.container("imagesearch-search")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    credentials = search.image_store_credentials_file
    assert credentials is not None
    volume_name = mounts[str(credentials.parent)]
    volumes = overlay.get("Deployment", "imagesearch-search")["spec"]["template"]["spec"][
        "volumes"]
    (volume,) = [v for v in volumes if v["name"] == volume_name]
    assert volume["secret"]["secretName"]


def test_budgets_autoscalers_and_monitors_find_their_targets(overlay):
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for kind in ("Deployment", "StatefulSet") for d in overlay.of_kind(kind)}
    for budget in overlay.of_kind("PodDisruptionBudget"):
        assert any(selects(budget["spec"]["selector"], labels) for labels in pods.values())
    for scaler in overlay.of_kind("HorizontalPodAutoscaler"):
        assert scaler["spec"]["scaleTargetRef"]["name"] in pods
        assert "replicas" not in overlay.get("Deployment", scaler["metadata"]["name"])["spec"]
    services = list(overlay.of_kind("Service"))
    for monitor in overlay.of_kind("ServiceMonitor"):
        port = monitor["spec"]["endpoints"][0]["port"]
        assert any(selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
                   and port in [p["name"] for p in s["spec"]["ports"]] for s in services), (
            monitor["metadata"]["name"])


def test_stateful_sets_are_governed_by_a_headless_service(overlay):
    """serviceName gives each pod its DNS name; Kubernetes requires that Service headless."""
    for stateful_set in overlay.of_kind("StatefulSet"):
        service = overlay.get("Service", stateful_set["spec"]["serviceName"])
        assert service["spec"].get("clusterIP") == "None", service["metadata"]["name"]
        labels = stateful_set["spec"]["template"]["metadata"]["labels"]
        assert selects({"matchLabels": service["spec"]["selector"]}, labels)


def test_a_monitor_scrapes_each_pod_once(overlay):
    """Two Services selected by one ServiceMonitor, both with its port, would double every
    Milvus or imagesearch series."""
    services = list(overlay.of_kind("Service"))
    for monitor in overlay.of_kind("ServiceMonitor"):
        port = monitor["spec"]["endpoints"][0]["port"]
        scraped = [s["metadata"]["name"] for s in services
                   if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
                   and port in [p["name"] for p in s["spec"]["ports"]]]
        assert len(scraped) == 1, f"{monitor['metadata']['name']}: {scraped}"


def test_custom_metrics_the_autoscaler_uses_are_served_by_the_adapter(overlay):
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    served = {rule["name"]["as"] for rule in rules}
    scaler = overlay.get("HorizontalPodAutoscaler", "imagesearch-embedder")
    for metric in scaler["spec"]["metrics"]:
        if metric["type"] == "Pods":
            assert metric["pods"]["metric"]["name"] in served


def test_images_run_as_the_user_the_pods_require():
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    assert set(re.findall(r"^USER (\S+)$", dockerfile, re.M)) == {"10001:10001"}
    for name in OVERLAYS:
        for workload in SERVICES:
            context = Overlay(name).pod_spec(workload)["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (10001, 10001)


def test_every_overlay_is_listed_in_the_runbook():
    runbook = (ROOT / "deploy/README.md").read_text()
    assert [o for o in OVERLAYS if f"overlays/{o}" not in runbook] == []
    assert Path(ROOT / "deploy/kubernetes/base/kustomization.yaml").exists()
