"""Both services start from the smoke overlay's own command and environment, pass its probes,
serve, expose the metrics the autoscaler and alerts use, and stop within the pod's grace.

Only what cannot hold outside a cluster is changed: addresses become loopback, ports free
ones, and Milvus the test's own (a Milvus server database, or a Milvus Lite file).
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch import synthetic
from imagesearch.client import SearchClient
from tests.deploy.rendered import Overlay
from tests.milvus_server import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
# Series named by components/gpu/prometheus-adapter-rules.yaml and components/monitoring.
EMBEDDER_SERIES = ("embedder_model_seconds_sum", "embedder_queue_depth",
                   "embedder_longest_model_call_seconds",
                   "grpc_server_handled_total", "grpc_server_handling_seconds_bucket")
SEARCH_SERIES = ("grpc_server_handled_total", "grpc_server_handling_seconds_bucket")


class Pod:
    """One service started as its Deployment would start it."""

    def __init__(self, overlay: Overlay, workload: str, prefix: str,
                 overrides: dict[str, str], log: Path) -> None:
        self.container = overlay.container(workload)
        self.grace_s = overlay.pod_spec(workload)["terminationGracePeriodSeconds"]
        self.port, self.metrics_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
        env.update(overlay.environment(workload))
        env.update({f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(self.port),
                    f"{prefix}METRICS_HOST": "127.0.0.1",
                    f"{prefix}METRICS_PORT": str(self.metrics_port), **overrides})
        command = self.container["command"]
        executable = Path(sys.executable).with_name(command[0])
        assert executable.exists(), f"{command[0]} is not an installed console script"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen([str(executable), *command[1:]], env=env,
                                            stdout=out, stderr=subprocess.STDOUT)

    def probe(self, kind: str) -> int:
        spec = self.container[kind]
        assert spec["grpc"]["port"] == container_grpc_port(self.container)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=spec["grpc"]["service"]),
                    timeout=spec.get("timeoutSeconds", 1))
            except grpc.RpcError:
                return -1
        return int(reply.status)

    def wait_started(self) -> None:
        """Within the startup probe's whole budget, as the kubelet would allow."""
        spec = self.container["startupProbe"]
        deadline = time.monotonic() + spec["periodSeconds"] * spec["failureThreshold"]
        while self.probe("startupProbe") != SERVING:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the startup probe would have failed"
            time.sleep(0.2)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as page:
            text: str = page.read().decode()
        return text

    def terminate(self) -> int:
        """SIGTERM, then at most the pod's grace period (less the preStop sleep) to exit."""
        pre_stop = float(self.container["lifecycle"]["preStop"]["exec"]["command"][1])
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=self.grace_s - pre_stop)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def container_grpc_port(container: dict) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")


@pytest.fixture
def embedder_pod(tmp_path: Path) -> Iterator[Pod]:
    pod = Pod(Overlay("smoke"), "imagesearch-embedder", "EMBEDDER_", {},
              tmp_path / "embedder.log")
    yield pod
    pod.kill()


def test_services_start_serve_and_stop_as_the_smoke_overlay_runs_them(embedder_pod,
                                                                     milvus_backend, tmp_path):
    overlay = Overlay("smoke")
    embedder_pod.wait_started()
    assert embedder_pod.probe("readinessProbe") == SERVING
    assert embedder_pod.probe("livenessProbe") == SERVING
    target = overlay.environment("imagesearch-search")["SEARCH_EMBEDDER_TARGET"]
    # The same dns:/// target with round_robin, only at the loopback address.
    target = re.sub(r"^dns:///[^:]+:\d+$", f"dns:///127.0.0.1:{embedder_pod.port}", target)
    search = Pod(overlay, "imagesearch-search", "SEARCH_",
                 {"SEARCH_EMBEDDER_TARGET": target, "SEARCH_MILVUS_URI": milvus_backend.new_uri()},
                 tmp_path / "search.log")
    try:
        search.wait_started()
        deadline = time.monotonic() + 30
        while search.probe("readinessProbe") != SERVING:
            assert time.monotonic() < deadline, search.log.read_text()[-3000:]
            time.sleep(0.2)
        assert search.probe("livenessProbe") == SERVING

        with SearchClient(f"127.0.0.1:{search.port}", 30) as client:
            client.create_collection("deployed")
            scene = synthetic.Scene("red", "circle", 1, "large", "center", "white")
            png = io.BytesIO()
            synthetic.render(scene, 96, random.Random(1)).save(png, format="PNG")
            image = png.getvalue()
            assert client.add_images("deployed", [("red-circle", image, {})]) == []
            hits = client.search("deployed", text="a red circle", top_k=1)
        assert [h.id for h in hits] == ["red-circle"]

        embedder_metrics, search_metrics = embedder_pod.metrics(), search.metrics()
        assert [s for s in EMBEDDER_SERIES if f"\n{s}" not in embedder_metrics] == []
        assert [s for s in SEARCH_SERIES if f"\n{s}" not in search_metrics] == []
        assert search.terminate() == 0
    finally:
        search.kill()
    assert embedder_pod.terminate() == 0
