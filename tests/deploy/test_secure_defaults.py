"""Every overlay but `smoke` installs secure by default (issue 18): no plaintext listener, no
call without credentials, no credential anyone could guess, no serving pod that may reach the
internet. `smoke` is exempt: a first look on kind, with nothing in it worth protecting.

Plaintext that stays: the Prometheus /metrics ports (imagesearch's and Milvus' 9091, which is
also Milvus' /healthz for the kubelet). They carry no credentials or data, the scrapers cannot
present our certificates, and NetworkPolicies admit only namespace 'monitoring' to them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from embedder_service.settings import EmbedderSettings
from search_service.settings import SearchSettings
from tests.deploy.rendered import OVERLAYS, Doc, Overlay, selects

SECURED = [o for o in OVERLAYS if o != "smoke"]
WORKLOADS = ("Deployment", "StatefulSet")
EVERYWHERE = {"0.0.0.0/0", "::/0"}
# Well-known credentials of what we deploy: Milvus' root and the MinIO chart's keys.
DEFAULT_SECRETS = ("root:Milvus", "minioadmin")
PLAINTEXT_PORT_NAMES = {"metrics"}


@pytest.fixture(params=SECURED)
def overlay(request: pytest.FixtureRequest) -> Overlay:
    return Overlay(request.param)


def settings_of(overlay: Overlay, workload: str, cls: type[Any], prefix: str) -> Any:
    """The service's settings from exactly the pod's environment (none of this process')."""
    saved = {n: os.environ.pop(n) for n in list(os.environ) if n.startswith(prefix)}
    try:
        os.environ.update(overlay.environment(workload))
        return cls()
    finally:
        for name in [n for n in os.environ if n.startswith(prefix)]:
            del os.environ[name]
        os.environ.update(saved)


def search(overlay: Overlay) -> SearchSettings:
    settings: SearchSettings = settings_of(overlay, "imagesearch-search", SearchSettings,
                                           "SEARCH_")
    return settings


def embedder(overlay: Overlay) -> EmbedderSettings:
    settings: EmbedderSettings = settings_of(overlay, "imagesearch-embedder", EmbedderSettings,
                                             "EMBEDDER_")
    return settings


def secret_behind(overlay: Overlay, workload: str, path: Path | None) -> str:
    """The Secret mounted where `path` lives in the workload's pod; fails when none is."""
    assert path is not None, f"{overlay.name}/{workload}: setting unset"
    mounts = {m["mountPath"]: m["name"] for m in overlay.container(workload)["volumeMounts"]}
    assert str(path.parent) in mounts, f"{overlay.name}/{workload}: nothing mounted at {path}"
    volumes = {v["name"]: v for v in overlay.pod_spec(workload)["volumes"]}
    volume = volumes[mounts[str(path.parent)]]
    assert "secret" in volume, f"{overlay.name}/{workload}: {path} is not from a Secret"
    return str(volume["secret"]["secretName"])


def milvus_config(overlay: Overlay) -> Doc:
    """Milvus' own milvus.yaml overrides: the operator's spec.config, or standalone's
    user.yaml."""
    for cr in overlay.of_kind("Milvus"):
        config: Doc = cr["spec"].get("config", {})
        return config
    user: Doc = yaml.safe_load(overlay.config_map("milvus-config")["data"]["user.yaml"]) or {}
    return user


def milvus_env(overlay: Overlay) -> list[Doc]:
    for cr in overlay.of_kind("Milvus"):
        env: list[Doc] = cr["spec"]["components"].get("env", [])
        return env
    return list(overlay.container("milvus").get("env", []))


# Ports the services serve with TLS whenever tls_cert_file is set (checked above).
TLS_PORTS = frozenset({"grpc", "https"})


def certificate_secrets(overlay: Overlay) -> set[str]:
    return {c["spec"]["secretName"] for c in overlay.of_kind("Certificate")}


def serving_pods(overlay: Overlay) -> Iterator[tuple[str, dict[str, str]]]:
    for kind in WORKLOADS:
        for workload in overlay.of_kind(kind):
            yield workload["metadata"]["name"], workload["spec"]["template"]["metadata"]["labels"]


def test_every_listener_but_metrics_speaks_tls(overlay):
    certificates = certificate_secrets(overlay)
    for workload, settings in (("imagesearch-embedder", embedder(overlay)),
                               ("imagesearch-search", search(overlay))):
        assert secret_behind(overlay, workload, settings.tls_cert_file) in certificates
        assert secret_behind(overlay, workload, settings.tls_key_file) in certificates
        plaintext = [p for p in overlay.container(workload)["ports"]
                     if p["name"] not in PLAINTEXT_PORT_NAMES and p["name"] not in TLS_PORTS]
        assert not plaintext, f"{overlay.name}/{workload}: plaintext ports {plaintext}"
    # HTTP/JSON beside TLS gRPC is HTTPS with the same certificate (SearchServer.http_tls).
    http_port = search(overlay).http_port
    ports = {p["name"]: p["containerPort"]
             for p in overlay.container("imagesearch-search")["ports"]}
    assert http_port is None or ports.get("https") == http_port
    for service in overlay.of_kind("Service"):
        for port in service["spec"]["ports"]:
            if port["name"] not in PLAINTEXT_PORT_NAMES:
                assert port.get("appProtocol") not in ("kubernetes.io/h2c", "http"), (
                    f"{overlay.name}: Service {service['metadata']['name']} port {port['name']}")
    assert milvus_config(overlay)["common"]["security"]["tlsMode"] >= 1


def test_only_the_search_service_calls_the_embedder_with_its_certificate(overlay):
    """Mutual TLS where both ends support it: search -> embedder."""
    serving, calling = embedder(overlay), search(overlay)
    certificates = certificate_secrets(overlay)
    assert secret_behind(overlay, "imagesearch-embedder", serving.tls_client_ca_file) in (
        certificates)
    assert secret_behind(overlay, "imagesearch-search", calling.embedder_tls_ca_file) in (
        certificates)
    assert secret_behind(overlay, "imagesearch-search", calling.embedder_tls_cert_file) in (
        certificates)


def test_certificates_name_the_overlays_namespace(overlay):
    (namespace,) = {d["metadata"]["namespace"] for d in overlay.of_kind("Certificate")}
    for certificate in overlay.of_kind("Certificate"):
        names = certificate["spec"].get("dnsNames", [])
        for name in [n for n in names if "." in n]:
            assert name.endswith(f".{namespace}.svc"), f"{overlay.name}: {name}"
            assert name.split(".")[0] in names


def test_search_reaches_milvus_over_tls(overlay):
    settings = search(overlay)
    assert urlparse(settings.milvus_uri).scheme == "https"
    assert secret_behind(overlay, "imagesearch-search", settings.milvus_tls_ca_file) in (
        certificate_secrets(overlay))


def test_every_call_needs_a_token_from_a_secret(overlay):
    serving, calling = embedder(overlay), search(overlay)
    secret_behind(overlay, "imagesearch-embedder", serving.auth_tokens_file)
    secret_behind(overlay, "imagesearch-search", calling.auth_tokens_file)
    secret_behind(overlay, "imagesearch-search", calling.embedder_token_file)
    secret_behind(overlay, "imagesearch-search", calling.milvus_token_file)
    assert milvus_config(overlay)["common"]["security"]["authorizationEnabled"] is True


def test_network_policies_admit_only_named_clients(overlay):
    for policy in overlay.of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from", [])
            assert sources, f"{overlay.name}: {policy['metadata']['name']} admits anyone"
            for source in sources:
                assert "ipBlock" not in source or source["ipBlock"]["cidr"] not in EVERYWHERE


def test_no_default_credential_is_shipped(overlay):
    # Credentials are made at install (deploy/README.md, Install), never rendered from here.
    for secret in overlay.of_kind("Secret"):
        assert not secret.get("data") and not secret.get("stringData"), (
            f"{overlay.name}: Secret {secret['metadata']['name']} ships its value")
    rendered = yaml.safe_dump_all(overlay.docs)
    for default in DEFAULT_SECRETS:
        assert default not in rendered, f"{overlay.name}: {default}"
    root = [e for e in milvus_env(overlay) if e["name"] == "COMMON_SECURITY_DEFAULTROOTPASSWORD"]
    assert root and "secretKeyRef" in root[0]["valueFrom"], f"{overlay.name}: Milvus root"
    for cr in overlay.of_kind("Milvus"):
        storage = cr["spec"]["dependencies"]["storage"]
        # The operator reads MinIO's keys from Secret <name>-minio, which the MinIO chart
        # would fill with minioadmin unless it is told to use an existing one.
        assert storage["inCluster"]["values"]["existingSecret"] == (
            f"{cr['metadata']['name']}-minio")


def test_no_serving_pod_may_reach_the_internet(overlay):
    pods = dict(serving_pods(overlay))
    for policy in overlay.of_kind("NetworkPolicy"):
        open_rules = [r for r in policy["spec"].get("egress", [])
                      if not r.get("to") or any(t.get("ipBlock", {}).get("cidr") in EVERYWHERE
                                                for t in r["to"])]
        if open_rules:
            reached = [n for n, labels in pods.items()
                       if selects(policy["spec"]["podSelector"], labels)]
            assert not reached, f"{overlay.name}: {policy['metadata']['name']} opens {reached}"
