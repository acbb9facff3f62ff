"""Start-up, health transitions, graceful shutdown, TLS and start-up failures."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedder_service import server as server_module
from embedder_service.bundle import sha256_file
from embedder_service.errors import BundleError, ProviderError
from embedder_service.server import EmbedderServer
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from imagesearch.serving.grpc_server import LIVENESS
from tests.certs import make_certs
from tests.conftest import embedder_settings, encode

SERVICE = "imagesearch.embedder.v1.EmbedderService"


async def _health(port: int, service: str = SERVICE) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def test_health_is_not_serving_while_loading_then_serving_but_alive_throughout(
        monkeypatch):
    release = threading.Event()
    real_load = server_module.load_embedder

    def slow_load(settings, metrics, bundle_dir=None):
        release.wait(30)
        return real_load(settings, metrics, bundle_dir)

    monkeypatch.setattr(server_module, "load_embedder", slow_load)
    server = EmbedderServer(embedder_settings())
    starting = asyncio.create_task(server.start())
    while not server.listening:  # noqa: ASYNC110 (the port opens inside start())
        await asyncio.sleep(0.01)
    assert await _health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _health(server.port, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    # The liveness probe's entry: a slow model load must not get the pod restarted.
    assert await _health(server.port, LIVENESS) == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embedder_pb2_grpc.EmbedderServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "the model is still loading; retry shortly"
    release.set()
    await starting
    assert await _health(server.port) == health_pb2.HealthCheckResponse.SERVING
    assert await _health(server.port, LIVENESS) == health_pb2.HealthCheckResponse.SERVING
    await server.stop(grace=1)


async def test_graceful_shutdown_finishes_requests_in_flight(photos):
    server = EmbedderServer(embedder_settings())
    await server.start()
    tower = server.holder.embedder._image_tower
    model_busy = threading.Event()
    real_run = tower.run

    def slow_run(pixels):
        model_busy.set()
        time.sleep(0.5)
        return real_run(pixels)

    tower.run = slow_run
    data = encode(photos["astronaut"])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
    calls = [asyncio.ensure_future(stub.EmbedImages(
        pb.EmbedImagesRequest(images=[pb.ImageInput(data=data)] * 8))) for _ in range(4)]
    # Requests are on the server and the model is running.
    assert await asyncio.to_thread(model_busy.wait, 10)
    stopping = asyncio.create_task(server.stop(grace=10))
    responses = await asyncio.gather(*calls)
    await stopping
    assert all(r.results[0].HasField("embedding") for r in responses)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close()


async def test_health_watch_streams_status_changes():
    # Watch is what client-side health checking (and Envoy, and grpc-health-probe's -watch)
    # uses; its handler writes with context.write instead of yielding, which the interceptors
    # once broke (every Watch ended INTERNAL at once).
    server = EmbedderServer(embedder_settings())
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.stop(grace=1))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def _wait_health(port: int, service: str, status: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await _health(port, service)) != status:
        assert time.monotonic() < deadline, f"{service!r} stayed {got}, never {status}"
        await asyncio.sleep(0.05)


async def test_stalled_model_call_fails_readiness_and_liveness_until_it_returns(photos):
    server = EmbedderServer(embedder_settings(model_stall_timeout_s=0.4))
    await server.start()
    tower = server.holder.embedder._image_tower
    release = threading.Event()
    real_run = tower.run

    def hung_run(pixels):  # a GPU or driver hang, until released
        release.wait(30)
        return real_run(pixels)

    tower.run = hung_run
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    call = asyncio.ensure_future(embedder_pb2_grpc.EmbedderServiceStub(channel).EmbedImages(
        pb.EmbedImagesRequest(images=[pb.ImageInput(data=encode(photos["coffee"]))])))
    try:
        assert await _health(server.port, LIVENESS) == health_pb2.HealthCheckResponse.SERVING
        # Checked every limit/4: reported within a second of the limit.
        await _wait_health(server.port, LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING,
                           timeout_s=1.5)
        assert await _health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _health(server.port, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        release.set()
    assert (await call).results[0].HasField("embedding")
    await _wait_health(server.port, LIVENESS, health_pb2.HealthCheckResponse.SERVING, 1.5)
    assert await _health(server.port) == health_pb2.HealthCheckResponse.SERVING
    await channel.close()
    await server.stop(grace=1)


@pytest.fixture
def bundle_copy(tmp_path: Path, bundled_model: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundled_model, target)
    return target


def test_missing_bundle_names_the_directory(tmp_path):
    with pytest.raises(BundleError, match="nowhere: model bundle directory does not exist"):
        server_module.load_embedder(embedder_settings(bundle=tmp_path / "nowhere"), None)


def test_partial_bundle_names_the_missing_file(bundle_copy):
    (bundle_copy / "text_fp32.onnx").unlink()
    with pytest.raises(BundleError, match=r"text_fp32\.onnx: file is missing"):
        server_module.load_embedder(embedder_settings(bundle=bundle_copy), None)


def test_corrupt_file_is_caught_by_its_checksum(bundle_copy):
    path = bundle_copy / "image_fp32.onnx"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"image_fp32\.onnx: file is corrupt: SHA-256 is"):
        server_module.load_embedder(embedder_settings(bundle=bundle_copy), None)


def test_truncated_file_is_caught_by_its_size(bundle_copy):
    path = bundle_copy / "text_fp32.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"text_fp32\.onnx: file is 1000 bytes, the manifest"):
        server_module.load_embedder(embedder_settings(bundle=bundle_copy), None)


def _edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _swap_image_weights(bundle: Path) -> Callable[[dict[str, Any]], None]:
    """Another model's image tower with a correct checksum entry: a mixed bundle."""
    shutil.copy(bundle / "image_int8.onnx", bundle / "image_fp32.onnx")
    path = bundle / "image_fp32.onnx"
    entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return lambda m: m["files"].update({"image_fp32.onnx": entry})


@pytest.mark.parametrize("edit", ["fingerprint", "weights", "preprocessing"])
@pytest.mark.parametrize("verify_checksums", [True, False])
def test_a_fingerprint_that_is_not_the_bundles_own_is_refused(bundle_copy, edit,
                                                               verify_checksums):
    """Served as claimed before: a hand-edited or copied fingerprint labelled vectors of one
    space as another's, so a collection could mix two."""
    change: Callable[[dict[str, Any]], None]
    if edit == "fingerprint":
        change = lambda m: m.update(fingerprint="sha256:" + "ab" * 32)  # noqa: E731
    elif edit == "weights":
        change = _swap_image_weights(bundle_copy)
    else:
        change = lambda m: m["image"].update(mean=[0.5, 0.5, 0.5])  # noqa: E731
    _edit_manifest(bundle_copy, change)
    with pytest.raises(BundleError, match=r"manifest\.json: fingerprint sha256:[0-9a-f]+ is not "
                                          r"this bundle's \(sha256:[0-9a-f]+\)"):
        server_module.load_embedder(embedder_settings(
            bundle=bundle_copy, verify_checksums=verify_checksums), None)


def test_corrupt_graph_without_checksums_is_named_by_onnx_runtime(bundle_copy):
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    (bundle_copy / "image_fp32.onnx").write_bytes(b"\x00" * manifest["files"][
        "image_fp32.onnx"]["bytes"])
    settings = embedder_settings(bundle=bundle_copy, verify_checksums=False)
    with pytest.raises(BundleError, match=r"image_fp32\.onnx: ONNX Runtime cannot load"):
        server_module.load_embedder(settings, None)


def test_invalid_manifest_names_the_field(bundle_copy):
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["embedding_dim"] = -3
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest is invalid: embedding_dim: Input should be"):
        server_module.load_embedder(embedder_settings(bundle=bundle_copy), None)


def test_required_gpu_fails_start_up_instead_of_falling_back():
    with pytest.raises(ProviderError, match="a GPU provider was required but the session runs "
                                            "on CPUExecutionProvider"):
        server_module.load_embedder(embedder_settings(require_gpu=True), None)


def test_serving_code_does_not_import_torch():
    code = ("import sys, embedder_service.server, embedder_service.core; "
            "sys.exit('torch' in sys.modules or 'open_clip' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_mutual_tls_accepts_known_clients_only(tmp_path):
    certs = make_certs(tmp_path)
    server = EmbedderServer(embedder_settings(
        tls_cert_file=certs["server.pem"], tls_key_file=certs["server.key"],
        tls_client_ca_file=certs["ca.pem"]))
    await server.start()
    address = f"localhost:{server.port}"
    trusted = grpc.ssl_channel_credentials(
        certs["ca.pem"].read_bytes(), certs["client.key"].read_bytes(),
        certs["client.pem"].read_bytes())
    async with grpc.aio.secure_channel(address, trusted) as channel:
        info = await embedder_pb2_grpc.EmbedderServiceStub(channel).GetModelInfo(
            pb.GetModelInfoRequest(), timeout=10)
    assert info.model.embedding_dim == 64
    anonymous = grpc.ssl_channel_credentials(certs["ca.pem"].read_bytes())
    async with grpc.aio.secure_channel(address, anonymous) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await embedder_pb2_grpc.EmbedderServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await server.stop(grace=1)


async def test_message_over_the_limit_is_resource_exhausted():
    server = EmbedderServer(embedder_settings(max_message_bytes=1024 * 1024))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EmbedImages(pb.EmbedImagesRequest(
                images=[pb.ImageInput(data=b"\xff" * (2 * 1024 * 1024))]), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert info.model.limits.max_message_bytes == 1024 * 1024
    await server.stop(grace=1)


async def test_metrics_endpoint_exports_rpc_and_batch_metrics(photos):
    import urllib.request

    server = EmbedderServer(embedder_settings(metrics_port=0))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        await embedder_pb2_grpc.EmbedderServiceStub(channel).EmbedImages(
            pb.EmbedImagesRequest(images=[pb.ImageInput(data=encode(photos["coffee"]))]))
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    body = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    await server.stop(grace=1)
    assert ('grpc_server_handled_total{code="OK",method="/imagesearch.embedder.v1.'
            'EmbedderService/EmbedImages"} 1.0') in body
    assert 'embedder_items_total{model="synthetic-clip-small",tower="image"} 1.0' in body
    assert "embedder_queue_wait_seconds_bucket" in body
    assert "embedder_queue_depth 0.0" in body
    assert "embedder_longest_model_call_seconds 0.0" in body


def test_a_second_embedder_on_a_port_in_use_fails_to_start(embedder_server):
    """gRPC's default SO_REUSEPORT let two processes share one port and split its traffic."""
    env = {**os.environ, "EMBEDDER_PORT": str(embedder_server.port), "EMBEDDER_LOG_FORMAT": "text"}
    done = subprocess.run([sys.executable, "-m", "embedder_service.server"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{embedder_server.port}: the port is in use" in done.stderr
    assert "Traceback" not in done.stderr
