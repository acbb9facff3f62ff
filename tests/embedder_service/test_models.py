"""Several models served at once: routing by name or fingerprint, readiness, health, refusal
of ambiguous bundles. The second model is the committed `synthetic-clip-wide` (another space:
96 dimensions on 48 px inputs, against the primary's 64 on 64 px)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedder_service import server as server_module
from embedder_service.bundle import MANIFEST_NAME
from embedder_service.errors import BundleError
from embedder_service.server import EmbedderServer
from embedder_service.settings import BUNDLED_MODEL
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from tests.conftest import embedder_settings, encode

WIDE = BUNDLED_MODEL.parent / "synthetic-clip-wide"
PRIMARY_NAME, WIDE_NAME = "synthetic-clip-small", "synthetic-clip-wide"


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_NAME).read_text())


PRIMARY_FP, WIDE_FP = _manifest(BUNDLED_MODEL)["fingerprint"], _manifest(WIDE)["fingerprint"]


@pytest_asyncio.fixture(scope="module")
async def two_models() -> AsyncIterator[EmbedderServer]:
    server = EmbedderServer(embedder_settings(extra_bundles=[WIDE]))
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest_asyncio.fixture(scope="module")
async def stub(two_models: EmbedderServer) -> AsyncIterator[embedder_pb2_grpc.EmbedderServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{two_models.port}") as channel:
        yield embedder_pb2_grpc.EmbedderServiceStub(channel)


def _vectors(response: pb.EmbedImagesResponse | pb.EmbedTextsResponse) -> np.ndarray:
    return np.array([r.embedding.values for r in response.results], dtype=np.float32)


async def test_model_info_lists_every_model_the_primary_first(stub):
    reply = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert reply.model.model_name == PRIMARY_NAME and reply.model.is_primary
    listed = [(m.model_name, m.fingerprint, m.embedding_dim, m.image_size, m.is_primary, m.ready)
              for m in reply.models]
    assert listed == [(PRIMARY_NAME, PRIMARY_FP, 64, 64, True, True),
                      (WIDE_NAME, WIDE_FP, 96, 48, False, True)]
    named = await stub.GetModelInfo(pb.GetModelInfoRequest(model=WIDE_FP))
    assert (named.model.model_name, named.model.precision) == (WIDE_NAME, "fp32")
    assert named.model.limits.max_items_per_request == 256


@pytest.mark.parametrize("model", ["", PRIMARY_NAME, PRIMARY_FP, WIDE_NAME, WIDE_FP],
                         ids=["empty", "primary-name", "primary-fp", "wide-name", "wide-fp"])
async def test_requests_are_embedded_by_the_model_they_name(stub, photos, model):
    wide = model in (WIDE_NAME, WIDE_FP)
    images = await stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=encode(photos["coffee"]))], model=model))
    texts = await stub.EmbedTexts(pb.EmbedTextsRequest(
        texts=[pb.TextInput(text="two red circles")], model=model))
    for response in (images, texts):
        assert response.model_fingerprint == (WIDE_FP if wide else PRIMARY_FP)
        assert _vectors(response).shape == (1, 96 if wide else 64)


async def test_the_second_model_gives_what_it_gives_served_alone(stub, photos):
    request = pb.EmbedImagesRequest(images=[pb.ImageInput(data=encode(photos["chelsea"]))])
    alone = EmbedderServer(embedder_settings(bundle=WIDE))
    await alone.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{alone.port}") as channel:
            expected = await embedder_pb2_grpc.EmbedderServiceStub(channel).EmbedImages(request)
    finally:
        await alone.stop(grace=1)
    request.model = WIDE_NAME
    np.testing.assert_allclose(_vectors(await stub.EmbedImages(request)), _vectors(expected),
                               atol=1e-6)


@pytest.mark.parametrize("call", ["EmbedImages", "EmbedTexts", "GetModelInfo"])
async def test_a_model_not_served_is_not_found_naming_those_that_are(stub, call):
    request = {"EmbedImages": pb.EmbedImagesRequest(images=[pb.ImageInput(data=b"x")]),
               "EmbedTexts": pb.EmbedTextsRequest(texts=[pb.TextInput(text="x")]),
               "GetModelInfo": pb.GetModelInfoRequest()}[call]
    request.model = "ViT-B-32"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, call)(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == (
        f"model 'ViT-B-32' is not served here; served models: {PRIMARY_NAME} ({PRIMARY_FP}), "
        f"{WIDE_NAME} ({WIDE_FP})")


async def test_a_stream_may_name_a_model_per_item(stub, photos):
    data = encode(photos["rocket"])
    models = ["", WIDE_FP, PRIMARY_NAME, WIDE_NAME]

    async def requests():
        for i, model in enumerate(models):
            yield pb.StreamEmbedImagesRequest(id=str(i), image=pb.ImageInput(data=data),
                                              model=model)

    answers = [a async for a in stub.StreamEmbedImages(requests())]
    assert [a.model_fingerprint for a in answers] == [PRIMARY_FP, WIDE_FP, PRIMARY_FP, WIDE_FP]
    assert [len(a.result.embedding.values) for a in answers] == [64, 96, 64, 96]
    np.testing.assert_allclose(answers[1].result.embedding.values,
                               answers[3].result.embedding.values, atol=1e-6)


async def test_a_stream_item_naming_an_unknown_model_fails_the_stream_naming_the_item(
        stub, photos):
    async def requests():
        yield pb.StreamEmbedImagesRequest(image=pb.ImageInput(data=encode(photos["coins"])))
        yield pb.StreamEmbedImagesRequest(image=pb.ImageInput(data=b"x"), model="nope")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [a async for a in stub.StreamEmbedImages(requests())]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details().startswith("item 1: model 'nope' is not served here")


async def _health(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def test_each_model_has_its_own_health_name(two_models):
    for name in ("", "imagesearch.embedder.v1.EmbedderService",
                 f"imagesearch.embedder.v1.EmbedderService/{PRIMARY_NAME}",
                 f"imagesearch.embedder.v1.EmbedderService/{WIDE_NAME}"):
        assert await _health(two_models.port, name) == health_pb2.HealthCheckResponse.SERVING


async def test_batch_metrics_are_labelled_by_model(two_models, stub):
    items = two_models.metrics.items.labels(WIDE_NAME, "text")
    before = items._value.get()
    await stub.EmbedTexts(pb.EmbedTextsRequest(texts=[pb.TextInput(text="a star")] * 3,
                                               model=WIDE_FP))
    assert items._value.get() == before + 3


def _slow_to_load(monkeypatch, bundle: Path) -> threading.Event:
    """Makes `bundle` load only once the returned event is set."""
    release = threading.Event()
    real_load = server_module.load_embedder

    def slow(settings, metrics, bundle_dir=None):
        if bundle_dir == bundle:
            release.wait(30)
        return real_load(settings, metrics, bundle_dir)

    monkeypatch.setattr(server_module, "load_embedder", slow)
    return release


async def test_the_service_is_ready_only_once_every_model_is_loaded(monkeypatch):
    """A rollout must not send traffic to a pod that would answer UNAVAILABLE for a model
    still loading: readiness (the service's health) waits for all of them, while the primary
    already answers under its own health name."""
    release = _slow_to_load(monkeypatch, WIDE)
    server = EmbedderServer(embedder_settings(extra_bundles=[WIDE]))
    starting = asyncio.create_task(server.start())
    try:
        while server.holder.embedder is None:  # noqa: ASYNC110 (loads inside start())
            await asyncio.sleep(0.01)
        primary_health = f"imagesearch.embedder.v1.EmbedderService/{PRIMARY_NAME}"
        assert await _health(server.port, primary_health) == (
            health_pb2.HealthCheckResponse.SERVING)
        for name in ("", "imagesearch.embedder.v1.EmbedderService"):
            assert await _health(server.port, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        release.set()
        await starting
        for name in ("", "imagesearch.embedder.v1.EmbedderService"):
            assert await _health(server.port, name) == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
        await starting
        await server.stop(grace=1)


async def test_a_model_still_loading_is_unavailable_while_the_primary_serves(
        monkeypatch, photos):
    release = _slow_to_load(monkeypatch, WIDE)
    server = EmbedderServer(embedder_settings(extra_bundles=[WIDE], ready_when="primary"))
    starting = asyncio.create_task(server.start())
    try:
        while server.holder.embedder is None:  # noqa: ASYNC110 (loads inside start())
            await asyncio.sleep(0.01)
        wide_health = f"imagesearch.embedder.v1.EmbedderService/{WIDE_NAME}"
        assert await _health(server.port, "") == health_pb2.HealthCheckResponse.SERVING
        assert await _health(server.port, wide_health) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            info = await stub.GetModelInfo(pb.GetModelInfoRequest())
            assert [(m.model_name, m.ready) for m in info.models] == [(PRIMARY_NAME, True),
                                                                      (WIDE_NAME, False)]
            assert (info.models[1].embedding_dim, info.models[1].precision) == (96, "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.EmbedTexts(pb.EmbedTextsRequest(texts=[pb.TextInput(text="a")],
                                                           model=WIDE_NAME))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == (f"model '{WIDE_NAME}' is still loading; "
                                          "retry shortly")
        release.set()
        await starting
        assert await _health(server.port, wide_health) == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
        await starting
        await server.stop(grace=1)


def _renamed(bundle: Path, target: Path, name: str) -> Path:
    """The same weights under another model name: the same fingerprint."""
    shutil.copytree(bundle, target)
    manifest = _manifest(target)
    manifest["model_name"] = name
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


async def test_two_bundles_with_one_fingerprint_stop_start_up(tmp_path):
    twin = _renamed(BUNDLED_MODEL, tmp_path / "twin", "another-name")
    server = EmbedderServer(embedder_settings(extra_bundles=[WIDE, twin]))
    with pytest.raises(BundleError, match=r"twin and .*synthetic-clip-small have the same model "
                                          rf"fingerprint \({PRIMARY_FP}\)"):
        await server.start()


async def test_two_bundles_with_one_name_stop_start_up(tmp_path):
    namesake = _renamed(WIDE, tmp_path / "namesake", PRIMARY_NAME)
    server = EmbedderServer(embedder_settings(extra_bundles=[namesake]))
    with pytest.raises(BundleError, match=r"namesake and .*synthetic-clip-small have the same "
                                          rf"model name \({PRIMARY_NAME}\)"):
        await server.start()


async def _wait_health(port: int, service: str, status: int, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await _health(port, service) != status:
        assert asyncio.get_running_loop().time() < deadline, f"{service} never became {status}"
        await asyncio.sleep(0.05)


async def test_a_stall_in_any_model_takes_the_server_out_until_it_returns(photos):
    server = EmbedderServer(embedder_settings(extra_bundles=[WIDE], model_stall_timeout_s=0.4))
    await server.start()
    tower = server.holder.find(WIDE_NAME).loaded()._image_tower
    release = threading.Event()
    real_run = tower.run

    def hung_run(pixels):  # a GPU or driver hang in the second model, until released
        release.wait(30)
        return real_run(pixels)

    tower.run = hung_run
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    call = asyncio.ensure_future(embedder_pb2_grpc.EmbedderServiceStub(channel).EmbedImages(
        pb.EmbedImagesRequest(images=[pb.ImageInput(data=encode(photos["coffee"]))],
                              model=WIDE_NAME)))
    names = ["", f"imagesearch.embedder.v1.EmbedderService/{PRIMARY_NAME}",
             f"imagesearch.embedder.v1.EmbedderService/{WIDE_NAME}"]
    try:
        await _wait_health(server.port, "liveness", health_pb2.HealthCheckResponse.NOT_SERVING,
                           timeout_s=1.5)
        for name in names:
            assert await _health(server.port, name) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        release.set()
    assert (await call).results[0].HasField("embedding")
    await _wait_health(server.port, "liveness", health_pb2.HealthCheckResponse.SERVING, 1.5)
    for name in names:
        assert await _health(server.port, name) == health_pb2.HealthCheckResponse.SERVING
    await channel.close()
    await server.stop(grace=1)
