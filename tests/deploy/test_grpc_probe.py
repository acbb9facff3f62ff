"""components/tls' exec probe: health over mutual TLS, as the pod's own certificate, against
a real server of ours on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from imagesearch.serving import grpc_server
from imagesearch.serving.grpc_server import ServerOptions, TlsFiles
from tests.deploy.rendered import ROOT

PROBE = ROOT / "deploy/kubernetes/components/tls/grpc-probe.py"


def make_pod_tls(directory: Path, name: str) -> None:
    """tls.crt, tls.key and ca.crt as cert-manager writes them, for DNS name `name`."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", "tls.key",
        "-out", "tls.csr")
    (directory / "tls.ext").write_text(f"subjectAltName=DNS:{name}\n")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "tls.ext", "-out", "tls.crt")


async def probe(port: int, service: str, name: str, tls_dir: Path) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), str(port), service, name,
        env={**os.environ, "GRPC_PROBE_TLS_DIR": str(tls_dir)})
    return await process.wait()


async def test_the_probe_checks_health_over_mutual_tls(tmp_path):
    pod, stranger = tmp_path / "pod", tmp_path / "stranger"
    for directory in (pod, stranger):
        directory.mkdir()
        make_pod_tls(directory, "imagesearch-embedder")
    tls = TlsFiles(pod / "tls.crt", pod / "tls.key", client_ca_file=pod / "ca.crt")
    server, port = grpc_server.create_server(ServerOptions("127.0.0.1", 0, 1 << 20, tls), [])
    health = grpc_server.add_health_and_reflection(server, ["test.Service"])
    await grpc_server.report_alive(health, True)
    await grpc_server.set_serving(health, ["test.Service"], False)
    await server.start()
    try:
        assert await probe(port, "liveness", "imagesearch-embedder", pod) == 0
        assert await probe(port, "test.Service", "imagesearch-embedder", pod) == 1  # not ready
        assert await probe(port, "liveness", "imagesearch-embedder", stranger) == 1
        assert await probe(port, "liveness", "imagesearch-search", pod) == 1  # wrong name
    finally:
        await server.stop(None)
