"""Every RPC of the embedder, against a real in-process server with the bundled model."""

from __future__ import annotations

import asyncio
import io
import random

import grpc
import numpy as np
import pytest
from PIL import Image

from imagesearch import synthetic
from imagesearch.copies import signal as signals
from imagesearch.copies import verify
from imagesearch.embedder.v1 import embedder_pb2 as pb
from tests.conftest import encode


def _vec(result: pb.ImageResult | pb.TextResult) -> np.ndarray:
    assert result.WhichOneof("result") == "embedding", result.error.message
    return np.asarray(result.embedding.values, dtype=np.float32)


async def test_model_info_describes_the_loaded_bundle(embedder_stub, bundled_model):
    info = (await embedder_stub.GetModelInfo(pb.GetModelInfoRequest())).model
    assert info.model_name == "synthetic-clip-small"
    assert info.fingerprint.startswith("sha256:") and len(info.fingerprint) == 71
    assert (info.embedding_dim, info.image_size, info.context_length) == (64, 64, 32)
    assert info.execution_provider == "CPUExecutionProvider"
    assert info.execution_providers[-1] == "CPUExecutionProvider"
    assert info.precision == "fp32"
    assert info.limits.max_items_per_request == 256
    assert info.limits.max_message_bytes == 64 * 1024 * 1024


async def test_image_embeddings_are_unit_length_and_deterministic(embedder_stub, photos):
    request = pb.EmbedImagesRequest(images=[pb.ImageInput(data=encode(photos["astronaut"]))] * 2)
    response = await embedder_stub.EmbedImages(request)
    first, second = (_vec(r) for r in response.results)
    assert first.shape == (64,)
    assert abs(np.linalg.norm(first) - 1) < 1e-5
    np.testing.assert_allclose(first, second, atol=1e-6)
    info = (await embedder_stub.GetModelInfo(pb.GetModelInfoRequest())).model
    assert response.model_fingerprint == info.fingerprint


async def test_text_embeddings_report_token_count_and_truncation(embedder_stub):
    response = await embedder_stub.EmbedTexts(pb.EmbedTextsRequest(
        texts=[pb.TextInput(text="a red circle"), pb.TextInput(text="blue " * 100)]))
    short, long = response.results
    assert abs(np.linalg.norm(_vec(short)) - 1) < 1e-5
    assert (short.truncated, short.token_count) == (False, 5)
    assert (long.truncated, long.token_count) == (True, 32)
    _vec(long)


async def test_corrupt_image_in_batch_fails_only_that_item(embedder_stub, photos):
    good = encode(photos["coffee"], "JPEG")
    bad_inputs = [b"", b"definitely not an image", good[: len(good) // 2],
                  encode(Image.new("RGB", (1, 1))), good]
    response = await embedder_stub.EmbedImages(
        pb.EmbedImagesRequest(images=[pb.ImageInput(data=d) for d in bad_inputs]))
    reasons = [r.error.reason if r.HasField("error") else None for r in response.results]
    assert reasons == [pb.ITEM_ERROR_REASON_EMPTY, pb.ITEM_ERROR_REASON_NOT_AN_IMAGE,
                       pb.ITEM_ERROR_REASON_CORRUPT_IMAGE, pb.ITEM_ERROR_REASON_TOO_SMALL, None]
    for result in response.results[:4]:
        assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert response.results[1].error.message.startswith("bytes are not an image")
    assert "truncated or corrupt" in response.results[2].error.message
    assert response.results[3].error.message == (
        "image is 1x1 pixels; each side must be at least 8")
    single = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(images=[pb.ImageInput(
        data=good)]))
    np.testing.assert_allclose(_vec(response.results[4]), _vec(single.results[0]), atol=1e-5)


async def test_bad_texts_fail_only_their_items(embedder_stub):
    response = await embedder_stub.EmbedTexts(pb.EmbedTextsRequest(texts=[
        pb.TextInput(text=""), pb.TextInput(text=" \t\n"), pb.TextInput(text="x" * 20000),
        pb.TextInput(text="a green star")]))
    empty, blank, too_long, good = response.results
    assert empty.error.reason == blank.error.reason == pb.ITEM_ERROR_REASON_EMPTY
    assert empty.error.message == "text is empty or only whitespace"
    assert too_long.error.reason == pb.ITEM_ERROR_REASON_TEXT_TOO_LONG
    assert too_long.error.message.startswith("text has 20000 characters; the limit is 16384")
    _vec(good)


@pytest.mark.parametrize(("rpc", "request_", "details"), [
    ("EmbedImages", pb.EmbedImagesRequest(), "request has no images; send 1 to 256"),
    ("EmbedTexts", pb.EmbedTextsRequest(), "request has no texts; send 1 to 256"),
    ("EmbedTexts", pb.EmbedTextsRequest(texts=[pb.TextInput(text="a")] * 257),
     "request has 257 texts; the limit is 256 per request (split the batch, or use "
     "StreamEmbedImages for bulk work)"),
])
async def test_malformed_batches_are_invalid_argument(embedder_stub, rpc, request_, details):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(embedder_stub, rpc)(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == details


async def test_invalid_utf8_text_is_invalid_argument_not_internal(embedder_server):
    # Field 1 (texts) holding a TextInput whose field 1 (text) has invalid UTF-8 bytes.
    text = b"\x0a\x02\xff\xfe"
    raw = b"\x0a" + bytes([len(text)]) + text
    async with grpc.aio.insecure_channel(f"127.0.0.1:{embedder_server.port}") as channel:
        call = channel.unary_unary("/imagesearch.embedder.v1.EmbedderService/EmbedTexts",
                                   request_serializer=lambda b: b,
                                   response_deserializer=pb.EmbedTextsResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(raw)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(
        "request is not a valid imagesearch.embedder.v1.EmbedTextsRequest")
    assert "UTF-8" in caught.value.details()


async def test_stream_returns_one_result_per_image_in_order(embedder_stub, photos):
    images = [encode(photos[name]) for name in ("astronaut", "coffee", "chelsea")] * 20
    images[7] = b"junk"

    async def requests():
        for i, data in enumerate(images):
            yield pb.StreamEmbedImagesRequest(id=f"img-{i}", image=pb.ImageInput(data=data))

    responses = [r async for r in embedder_stub.StreamEmbedImages(requests())]
    assert [r.index for r in responses] == list(range(len(images)))
    assert [r.id for r in responses] == [f"img-{i}" for i in range(len(images))]
    assert responses[7].result.error.reason == pb.ITEM_ERROR_REASON_NOT_AN_IMAGE
    np.testing.assert_allclose(_vec(responses[0].result), _vec(responses[3].result), atol=1e-5)


async def test_concurrent_requests_are_batched_together(embedder_server, embedder_stub, photos):
    sizes = embedder_server.metrics.batch_size.labels("synthetic-clip-small", "image")
    before_count, before_sum = _histogram(sizes)
    data = encode(photos["rocket"])
    await asyncio.gather(*(embedder_stub.EmbedImages(
        pb.EmbedImagesRequest(images=[pb.ImageInput(data=data)])) for _ in range(24)))
    after_count, after_sum = _histogram(sizes)
    assert after_sum - before_sum == 24
    assert after_count - before_count < 24, "24 concurrent single-image calls ran unbatched"


def _histogram(histogram) -> tuple[float, float]:
    samples = {s.name: s.value for s in histogram.collect()[0].samples}
    return samples["embedder_batch_size_count"], samples["embedder_batch_size_sum"]


async def test_health_and_reflection_are_served(embedder_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{embedder_server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "imagesearch.embedder.v1.EmbedderService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = [s.name async for r in stub.ServerReflectionInfo(ask())
                 for s in r.list_services_response.service]
        # grpcurl asks grpc.reflection.v1 first: the same messages under the v1 package.
        v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)

        async def describe():
            yield reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="imagesearch.embedder.v1.EmbedderService")

        described = [r async for r in v1(describe())]
    assert "imagesearch.embedder.v1.EmbedderService" in names
    assert {"grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(names)
    assert described[0].file_descriptor_response.file_descriptor_proto


async def test_large_photo_fits_in_the_configured_message_size(embedder_stub):
    noise = np.random.default_rng(0).integers(0, 256, (2600, 2600, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    assert len(data) > 16 * 1024 * 1024
    response = await embedder_stub.EmbedImages(
        pb.EmbedImagesRequest(images=[pb.ImageInput(data=data)]))
    _vec(response.results[0])


async def test_exif_orientation_is_applied(embedder_stub):
    scene = synthetic.Scene("red", "triangle", 1, "large", "left", "white")
    upright = synthetic.render(scene, 128, random.Random(0))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: turn 90 degrees clockwise to display
    with_exif = io.BytesIO()
    stored.save(with_exif, "JPEG", quality=95, exif=exif)
    response = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(images=[
        pb.ImageInput(data=with_exif.getvalue()),
        pb.ImageInput(data=encode(stored, "JPEG", quality=95)),
        pb.ImageInput(data=encode(upright, "JPEG", quality=95))]))
    displayed, sideways, reference = (_vec(r) for r in response.results)
    assert float(displayed @ reference) > 0.99
    assert float(displayed @ reference) > float(sideways @ reference) + 0.01


async def test_stream_id_over_the_limit_fails_the_stream_with_its_index(embedder_stub, photos):
    data = encode(photos["coffee"])

    async def requests():
        yield pb.StreamEmbedImagesRequest(id="ok", image=pb.ImageInput(data=data))
        yield pb.StreamEmbedImagesRequest(id="x" * 2000, image=pb.ImageInput(data=data))

    call = embedder_stub.StreamEmbedImages(requests())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [r async for r in call]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "item 1: id is longer than 1024 bytes"


async def test_cancelled_stream_leaves_the_server_healthy(embedder_stub, photos):
    data = encode(photos["astronaut"])

    async def endless():
        index = 0
        while True:
            yield pb.StreamEmbedImagesRequest(id=str(index), image=pb.ImageInput(data=data))
            index += 1

    # Many times over: a cancelled call's handler is finalised after grpc has let go of the call,
    # and reading the call's state then (context.peer() did) crashed the process one time in ~40.
    for _ in range(60):
        call = embedder_stub.StreamEmbedImages(endless())
        received = 0
        async for _ in call:
            received += 1
            if received == 5:
                call.cancel()
                break
    response = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=data)]), timeout=10)
    _vec(response.results[0])


async def test_copy_signals_come_only_when_asked_and_only_for_images(embedder_stub, photos):
    good = encode(photos["coffee"], "JPEG")
    plain = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=good)]))
    assert not plain.results[0].HasField("copy_signal")
    asked = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=good), pb.ImageInput(data=b"junk")],
        include_copy_signal=True))
    made, failed = asked.results
    np.testing.assert_allclose(_vec(made), _vec(plain.results[0]), atol=1e-6)
    assert made.copy_signal.format == signals.FORMAT
    decoded = signals.decode(made.copy_signal.data)
    assert made.copy_signal.perceptual_hash == decoded.phash
    assert failed.HasField("error") and not failed.HasField("copy_signal")
    info = (await embedder_stub.GetModelInfo(pb.GetModelInfoRequest())).model
    assert info.copy_signal_format == signals.FORMAT


async def test_copy_signal_is_of_the_upright_image_and_streams(embedder_stub, photos):
    """A phone photo stored sideways with an EXIF orientation and its upright copy: the same
    signal, whichever RPC computed it."""
    upright = photos["astronaut"]
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(sideways, "JPEG", quality=95, exif=exif)

    async def requests():
        for data in (sideways.getvalue(), encode(upright, "JPEG", quality=95)):
            yield pb.StreamEmbedImagesRequest(image=pb.ImageInput(data=data),
                                              include_copy_signal=True)

    rotated, reference = [signals.decode(r.result.copy_signal.data)
                          async for r in embedder_stub.StreamEmbedImages(requests())]
    assert verify.compare(rotated, reference).is_copy
    assert verify.hamming(rotated.phash, reference.phash) <= 4


def test_a_request_whose_signals_cannot_fit_the_answer_is_refused_up_front():
    from embedder_service.models import ServedModels
    from embedder_service.preprocess import Extras
    from embedder_service.servicer import EmbedderServicer
    from imagesearch.errors import ResourceExhausted

    servicer = EmbedderServicer(ServedModels(), max_message_bytes=1 << 20)
    servicer._check_answer_fits(30, 512, Extras(copy_signal=True))
    with pytest.raises(ResourceExhausted, match="send at most 30 per request"):
        servicer._check_answer_fits(60, 512, Extras(copy_signal=True))
    with pytest.raises(ResourceExhausted, match="send at most 3 per request"):
        servicer._check_answer_fits(4, 512, Extras(thumbnail_side=400))
    with pytest.raises(ResourceExhausted, match="send at most 2 per request"):
        servicer._check_answer_fits(3, 512, Extras(pixels_side=400))


async def test_thumbnails_are_upright_jpegs_no_larger_than_asked_and_never_enlarged(
        embedder_stub, photos):
    upright = photos["astronaut"]  # 512 x 512
    wide = upright.resize((512, 256))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the thumbnail is of the upright picture
    sideways = io.BytesIO()
    wide.transpose(Image.Transpose.ROTATE_90).save(sideways, "JPEG", quality=95, exif=exif)
    cut_out = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent: white
    answer = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=sideways.getvalue()), pb.ImageInput(data=encode(cut_out)),
                pb.ImageInput(data=b"junk")], thumbnail_max_side=64))
    rotated, small, failed = answer.results
    thumb = Image.open(io.BytesIO(rotated.thumbnail))
    assert (thumb.format, thumb.size) == ("JPEG", (64, 32))
    assert not rotated.HasField("copy_signal")
    tiny = Image.open(io.BytesIO(small.thumbnail))
    assert tiny.size == (40, 30)
    assert np.asarray(tiny.convert("L")).min() > 240  # transparency on white
    assert failed.HasField("error") and failed.thumbnail == b""
    plain = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=encode(upright))]))
    assert plain.results[0].thumbnail == b""


async def test_pixels_are_upright_jpegs_of_the_asked_side_never_enlarged(embedder_stub, photos):
    wide = photos["astronaut"].resize((512, 256))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the copy is of the upright picture
    sideways = io.BytesIO()
    wide.transpose(Image.Transpose.ROTATE_90).save(sideways, "JPEG", quality=95, exif=exif)
    cut_out = Image.new("RGBA", (100, 70), (255, 0, 0, 0))  # fully transparent: white
    request = pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=sideways.getvalue()), pb.ImageInput(data=encode(cut_out))],
        pixels_max_side=300)
    answer = await embedder_stub.EmbedImages(request)
    rotated, small = answer.results
    copy = Image.open(io.BytesIO(rotated.pixels))
    assert (copy.format, copy.size) == ("JPEG", (300, 150))
    assert rotated.thumbnail == b"" and not rotated.HasField("copy_signal")
    # Re-embedding the copy gives (nearly) the original's vector: what migration relies on.
    again = await embedder_stub.EmbedImages(pb.EmbedImagesRequest(
        images=[pb.ImageInput(data=rotated.pixels)]))
    assert float(_vec(again.results[0]) @ _vec(rotated)) > 0.98
    untouched = Image.open(io.BytesIO(small.pixels))
    assert untouched.size == (100, 70)
    assert np.asarray(untouched.convert("L")).min() > 240  # transparency on white


async def test_pixels_of_a_large_jpeg_keep_the_asked_side_despite_draft_decoding(
        embedder_stub, photos):
    big = encode(photos["astronaut"].resize((2000, 1500)), "JPEG", quality=90)

    async def requests():
        yield pb.StreamEmbedImagesRequest(image=pb.ImageInput(data=big), pixels_max_side=1024)

    [answer] = [r async for r in embedder_stub.StreamEmbedImages(requests())]
    assert Image.open(io.BytesIO(answer.result.pixels)).size == (1024, 768)


@pytest.mark.parametrize("side", [-1, 1, 63, 2049])
async def test_a_pixels_side_out_of_range_is_invalid(embedder_stub, photos, side):
    image = pb.ImageInput(data=encode(photos["coffee"], "JPEG"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embedder_stub.EmbedImages(pb.EmbedImagesRequest(images=[image],
                                                              pixels_max_side=side))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (f"pixels_max_side must be 64 to 2048, or 0 for none; "
                                      f"got {side}")

    async def requests():
        yield pb.StreamEmbedImagesRequest(image=image, pixels_max_side=side)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [r async for r in embedder_stub.StreamEmbedImages(requests())]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (f"item 0: pixels_max_side must be 64 to 2048, or 0 for "
                                      f"none; got {side}")


@pytest.mark.parametrize("side", [-1, 1, 15, 1025])
async def test_a_thumbnail_side_out_of_range_is_invalid(embedder_stub, photos, side):
    image = pb.ImageInput(data=encode(photos["coffee"], "JPEG"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await embedder_stub.EmbedImages(pb.EmbedImagesRequest(images=[image],
                                                              thumbnail_max_side=side))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (f"thumbnail_max_side must be 16 to 1024, or 0 for none; "
                                      f"got {side}")

    async def requests():
        yield pb.StreamEmbedImagesRequest(image=image, thumbnail_max_side=side)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [r async for r in embedder_stub.StreamEmbedImages(requests())]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
