"""gRPC servicer: converts messages, calls the core, converts back. Errors: see interceptors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from embedder_service.core import Embedder, FailureReason, Outcome
from embedder_service.models import ServedModel, ServedModels
from embedder_service.preprocess import Extras
from imagesearch.copies import signal as signals
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.errors import InvalidArgument, ResourceExhausted, ServiceError

_REASONS = {
    FailureReason.EMPTY: pb.ITEM_ERROR_REASON_EMPTY,
    FailureReason.NOT_AN_IMAGE: pb.ITEM_ERROR_REASON_NOT_AN_IMAGE,
    FailureReason.CORRUPT_IMAGE: pb.ITEM_ERROR_REASON_CORRUPT_IMAGE,
    FailureReason.TOO_MANY_BYTES: pb.ITEM_ERROR_REASON_TOO_MANY_BYTES,
    FailureReason.TOO_MANY_PIXELS: pb.ITEM_ERROR_REASON_TOO_MANY_PIXELS,
    FailureReason.TOO_SMALL: pb.ITEM_ERROR_REASON_TOO_SMALL,
    FailureReason.TEXT_TOO_LONG: pb.ITEM_ERROR_REASON_TEXT_TOO_LONG,
    FailureReason.INTERNAL: pb.ITEM_ERROR_REASON_INTERNAL,
}


# Stream items being embedded at once per call: enough to fill batches, bounded for memory.
STREAM_WINDOW = 128
MAX_STREAM_ID_BYTES = 1024
MIN_THUMBNAIL_SIDE, MAX_THUMBNAIL_SIDE = 16, 1024
MIN_PIXELS_SIDE, MAX_PIXELS_SIDE = 64, 2048
# A JPEG at quality 85 (thumbnail) or 90 (pixels) of the noisiest picture takes under 1.5
# and 2 bytes a pixel; 2 and 3 to be safe.
THUMBNAIL_BYTES_PER_PIXEL, PIXELS_BYTES_PER_PIXEL = 2, 3
# index, request, fingerprint of the model embedding it, the embedding
_Entry = tuple[int, pb.StreamEmbedImagesRequest, str, "asyncio.Task[Outcome]"]


async def _ordered(
    models: ServedModels, requests: AsyncIterator[pb.StreamEmbedImagesRequest],
) -> AsyncIterator[tuple[int, pb.StreamEmbedImagesRequest, str, Outcome]]:
    """Embeds a stream with up to STREAM_WINDOW items in flight; yields results in input order.

    A reader task starts each item's embedding as it arrives (so items join server batches
    while earlier ones are still running); the bounded queue is the back-pressure on the client.
    """
    queue: asyncio.Queue[_Entry | BaseException | None] = asyncio.Queue(STREAM_WINDOW)
    reader = asyncio.get_running_loop().create_task(_read(models, requests, queue))
    try:
        while (entry := await queue.get()) is not None:
            if isinstance(entry, BaseException):
                raise entry
            index, request, fingerprint, task = entry
            yield index, request, fingerprint, await task
    finally:
        reader.cancel()
        while not queue.empty():
            leftover = queue.get_nowait()
            if isinstance(leftover, tuple):
                leftover[3].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _read(models: ServedModels, requests: AsyncIterator[pb.StreamEmbedImagesRequest],
                queue: asyncio.Queue[_Entry | BaseException | None]) -> None:
    loop = asyncio.get_running_loop()
    try:
        index = 0
        async for request in requests:
            embedder, extras = _stream_item(models, request, index)
            task = loop.create_task(embedder.embed_image(request.image.data, extras))
            await queue.put((index, request, embedder.description.fingerprint, task))
            index += 1
        await queue.put(None)
    except asyncio.CancelledError:
        raise
    except Exception as err:
        await queue.put(err)


def _stream_item(models: ServedModels, request: pb.StreamEmbedImagesRequest,
                 index: int) -> tuple[Embedder, Extras]:
    """Checks one stream item and picks its model (each item may name its own)."""
    if len(request.id.encode()) > MAX_STREAM_ID_BYTES:
        raise InvalidArgument(f"item {index}: id is longer than {MAX_STREAM_ID_BYTES} bytes")
    try:
        extras = _extras(request)
        return models.get(request.model), extras
    except ServiceError as err:
        raise type(err)(f"item {index}: {err}") from None


def _fill(result: pb.ImageResult | pb.TextResult, outcome: Outcome) -> None:
    if outcome.failure is not None:
        failure = outcome.failure
        result.error.reason = _REASONS[failure.reason]
        result.error.code = grpc.StatusCode[failure.status_name].value[0]
        result.error.message = failure.message
    else:
        assert outcome.embedding is not None
        result.embedding.values[:] = outcome.embedding.tolist()


def image_result(outcome: Outcome) -> pb.ImageResult:
    result = pb.ImageResult()
    _fill(result, outcome)
    if outcome.copy_signal is not None:
        result.copy_signal.format = signals.FORMAT
        result.copy_signal.data = outcome.copy_signal
        result.copy_signal.perceptual_hash = signals.perceptual_hash(outcome.copy_signal)
    if outcome.thumbnail is not None:
        result.thumbnail = outcome.thumbnail
    if outcome.pixels is not None:
        result.pixels = outcome.pixels
    return result


def _extras(request: pb.EmbedImagesRequest | pb.StreamEmbedImagesRequest) -> Extras:
    """What the request asks beside the embeddings, its sides checked."""
    return Extras(
        copy_signal=request.include_copy_signal,
        thumbnail_side=_side("thumbnail_max_side", request.thumbnail_max_side,
                             MIN_THUMBNAIL_SIDE, MAX_THUMBNAIL_SIDE),
        pixels_side=_side("pixels_max_side", request.pixels_max_side, MIN_PIXELS_SIDE,
                          MAX_PIXELS_SIDE))


def _side(field: str, side: int, least: int, most: int) -> int:
    if side and not least <= side <= most:
        raise InvalidArgument(f"{field} must be {least} to {most}, or 0 for none; got {side}")
    return side


def text_result(outcome: Outcome) -> pb.TextResult:
    result = pb.TextResult(truncated=outcome.truncated, token_count=outcome.token_count,
                           text_tower=outcome.text_tower, language=outcome.language)
    _fill(result, outcome)
    return result


class EmbedderServicer:
    def __init__(self, models: ServedModels, max_message_bytes: int) -> None:
        self._models = models
        self._max_message_bytes = max_message_bytes

    async def EmbedImages(self, request: pb.EmbedImagesRequest,
                          context: grpc.aio.ServicerContext) -> pb.EmbedImagesResponse:
        extras = _extras(request)
        embedder = self._models.get(request.model)
        if extras.copy_signal or extras.thumbnail_side or extras.pixels_side:
            self._check_answer_fits(len(request.images), embedder.description.embedding_dim,
                                    extras)
        outcomes = await embedder.embed_images([image.data for image in request.images],
                                               extras)
        return pb.EmbedImagesResponse(results=[image_result(o) for o in outcomes],
                                      model_fingerprint=embedder.description.fingerprint)

    def _check_answer_fits(self, count: int, dim: int, extras: Extras) -> None:
        """Refuses at once a request whose answer could exceed the message limit: each copy
        signal may take ~32 KB, each JPEG up to its BYTES_PER_PIXEL a pixel."""
        per_image = (4 * dim + 64 + (signals.MAX_ENCODED_BYTES if extras.copy_signal else 0)
                     + THUMBNAIL_BYTES_PER_PIXEL * extras.thumbnail_side ** 2
                     + PIXELS_BYTES_PER_PIXEL * extras.pixels_side ** 2)
        most = max(1, (self._max_message_bytes - 4096) // per_image)
        if count > most:
            raise ResourceExhausted(
                f"{count} images with copy signals, thumbnails or pixels may not fit in one "
                f"answer under the {self._max_message_bytes}-byte message limit: send at most "
                f"{most} per request, or use StreamEmbedImages")

    async def EmbedTexts(self, request: pb.EmbedTextsRequest,
                         context: grpc.aio.ServicerContext) -> pb.EmbedTextsResponse:
        embedder = self._models.get(request.model)
        outcomes = await embedder.embed_texts(
            [item.text for item in request.texts],
            [item.language or request.language for item in request.texts])
        return pb.EmbedTextsResponse(results=[text_result(o) for o in outcomes],
                                     model_fingerprint=embedder.description.fingerprint)

    async def StreamEmbedImages(
        self, requests: AsyncIterator[pb.StreamEmbedImagesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.StreamEmbedImagesResponse]:
        async for index, request, fingerprint, outcome in _ordered(self._models, requests):
            yield pb.StreamEmbedImagesResponse(id=request.id, index=index,
                                               result=image_result(outcome),
                                               model_fingerprint=fingerprint)

    async def GetModelInfo(self, request: pb.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetModelInfoResponse:
        asked = self._models.find(request.model)
        limits = self._limits(asked.loaded())
        return pb.GetModelInfoResponse(
            model=_model_info(asked, limits),
            models=[_model_info(served, limits) for served in self._models])

    def _limits(self, embedder: Embedder) -> pb.Limits:
        """The server's limits on requests (the same for every model)."""
        limits, image_limits = embedder.limits, embedder.image_limits
        return pb.Limits(
            max_items_per_request=limits.max_items, max_text_chars=limits.max_text_chars,
            max_image_bytes=image_limits.max_bytes, max_image_pixels=image_limits.max_pixels,
            min_image_side=image_limits.min_side, max_message_bytes=self._max_message_bytes)


def _model_info(served: ServedModel, limits: pb.Limits) -> pb.ModelInfo:
    """What a model is; a model still loading has only what its manifest says (no providers,
    precision or batching yet)."""
    m = served.manifest
    info = pb.ModelInfo(
        model_name=m.model_name, fingerprint=m.fingerprint, embedding_dim=m.embedding_dim,
        image_size=m.image.size, context_length=m.text.context_length, limits=limits,
        copy_signal_format=signals.FORMAT, is_primary=served.is_primary, ready=served.ready)
    if served.embedder is not None:
        d = served.embedder.description
        info.execution_provider = d.providers[0]
        info.execution_providers[:] = d.providers
        info.precision = d.precision
        info.max_batch_size = d.max_batch_size
        info.text_towers.extend(
            pb.TextTower(name=t.name, languages=t.languages, context_length=t.context_length,
                         is_default=t.is_default) for t in d.text_towers)
    return info
