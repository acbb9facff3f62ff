"""The core's Embedder port on the embedder service, over one gRPC channel made at start-up
(imagesearch.channels: round_robin, health-checked, retried on UNAVAILABLE, keepalive).

- A deadline on every call: the configured timeout, cut to the caller's remaining deadline.
- Requests are split to the embedder's own limits of items and bytes per request (from
  GetModelInfo), so an embedder configured with lower limits than the search API's still
  serves its batches, and a batch of large photos never exceeds a message limit.
- Every status the embedder may answer is translated into the domain's errors; per-item
  refusals become Outcomes with the item's Problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from imagesearch.channels import ChannelConfig, ClientTls, create_aio_channel
from imagesearch.copies.signal import FORMAT as COPY_SIGNAL_FORMAT
from imagesearch.copies.signal import MAX_ENCODED_BYTES as MAX_SIGNAL_BYTES
from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from imagesearch.errors import InvalidArgument, ResourceExhausted
from search_service.domain import Embedding, Kept, ModelSpace, Outcome, Problem, ServedModel
from search_service.errors import EmbedderFailed, EmbedderUnavailable, ModelNotServed

SERVICE = "imagesearch.embedder.v1.EmbedderService"
# Until GetModelInfo says otherwise (the embedder's default).
DEFAULT_MAX_ITEMS = 256
# What an image's answer may take when it carries a copy signal: the signal, its framing and
# the embedding (up to 2048 float32 values).
SIGNAL_BYTES = MAX_SIGNAL_BYTES + 64 + 4 * 2048
# A thumbnail's and a normalised copy's most, as the embedder counts them (JPEGs at quality 85
# and 90) when it checks that an answer fits its message limit.
THUMBNAIL_BYTES_PER_PIXEL, PIXELS_BYTES_PER_PIXEL = 2, 3
_PROBLEMS = {code.value[0]: code.name for code in grpc.StatusCode}

# An item's answer: the embedder's result, or why it was never sent.
_Result = pb.ImageResult | pb.TextResult | Outcome


def embedder_channel(target: str, max_message_bytes: int, keepalive_s: float,
                     keepalive_timeout_s: float, tls: ClientTls | None,
                     health_checked: bool = True) -> grpc.aio.Channel:
    """Health-checked: a replica reporting NOT_SERVING (loading, draining, its model call
    stalled) gets no new calls although its connection is fine."""
    return create_aio_channel(target, ChannelConfig(
        SERVICE, max_message_bytes, keepalive_s, keepalive_timeout_s, tls,
        health_checked=health_checked))


class GrpcEmbedder:
    """Implements search_service.ports.Embedder."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float, token: str = "",
                 max_message_bytes: int = 64 << 20) -> None:
        self._stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        self._timeout = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._max_items = DEFAULT_MAX_ITEMS
        # Our channel's limit, until the embedder's own (if lower) is known.
        self._channel_bytes = max_message_bytes
        self._max_bytes = max_message_bytes

    def _deadline(self, remaining: float | None) -> float:
        return self._timeout if remaining is None else max(0.001, min(self._timeout, remaining))

    async def model(self, remaining: float | None = None, model: str = "") -> ModelSpace:
        info = await self._info(remaining, model)
        return _space(info.model)

    async def models(self, remaining: float | None = None) -> list[ServedModel]:
        info = await self._info(remaining)
        # An embedder older than several models lists none: its one model is the primary.
        served = list(info.models) or [info.model]
        return [ServedModel(_space(m), m.is_primary or not info.models,
                            m.ready or not info.models, m.image_size,
                            tuple(sorted({lang for t in m.text_towers for lang in t.languages})))
                for m in served]

    async def _info(self, remaining: float | None, model: str = "") -> Any:
        info = await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(model=model),
                                remaining)
        limits = info.model.limits
        if limits.max_items_per_request > 0:
            self._max_items = limits.max_items_per_request
        if limits.max_message_bytes > 0:
            self._max_bytes = min(self._channel_bytes, limits.max_message_bytes)
        return info

    async def embed_images(self, images: Sequence[bytes], remaining: float | None = None,
                           model: str = "") -> tuple[str, list[Embedding]]:
        fingerprint, results = await self._embed(
            self._stub.EmbedImages, lambda chunk: pb.EmbedImagesRequest(
                images=[pb.ImageInput(data=d) for d in chunk], model=model), images, remaining,
            model=model)
        return fingerprint, [_embedded(r) for r in results]

    async def embed_images_signed(self, images: Sequence[bytes],
                                  remaining: float | None = None, thumbnail_side: int = 0,
                                  model: str = "", pixels_side: int = 0,
                                  ) -> tuple[str, list[Embedding], list[Kept]]:
        fingerprint, results = await self._embed(
            self._stub.EmbedImages, lambda chunk: pb.EmbedImagesRequest(
                images=[pb.ImageInput(data=d) for d in chunk], include_copy_signal=True,
                thumbnail_max_side=thumbnail_side, model=model, pixels_max_side=pixels_side),
            images, remaining,
            answer_bytes=SIGNAL_BYTES + THUMBNAIL_BYTES_PER_PIXEL * thumbnail_side ** 2
            + PIXELS_BYTES_PER_PIXEL * pixels_side ** 2, model=model)
        return fingerprint, [_embedded(r) for r in results], [_kept(r) for r in results]

    async def embed_texts(self, texts: Sequence[str], remaining: float | None = None,
                          model: str = "") -> tuple[str, list[Embedding]]:
        fingerprint, results = await self._embed(
            self._stub.EmbedTexts, lambda chunk: pb.EmbedTextsRequest(
                texts=[pb.TextInput(text=t) for t in chunk], model=model), texts, remaining,
            model=model)
        return fingerprint, [_embedded(r) for r in results]

    async def embed_texts_in(self, texts: Sequence[str], language: str,
                             remaining: float | None = None, model: str = "",
                             ) -> tuple[str, list[Embedding], list[str]]:
        fingerprint, results = await self._embed(
            self._stub.EmbedTexts, lambda chunk: pb.EmbedTextsRequest(
                texts=[pb.TextInput(text=t) for t in chunk], language=language, model=model),
            texts, remaining, model=model)
        towers = [r.text_tower if isinstance(r, pb.TextResult) else "" for r in results]
        return fingerprint, [_embedded(r) for r in results], towers

    async def _embed(self, method: Any, build: Callable[[Sequence[Any]], Any],
                     items: Sequence[Any], remaining: float | None, answer_bytes: int = 0,
                     model: str = "") -> tuple[str, list[_Result]]:
        try:
            return await self._embed_chunks(method, build, items, remaining, answer_bytes,
                                            model)
        except _LimitChanged:
            await self.model(remaining)  # the embedder's limit is lower than we knew
            return await self._embed_chunks(method, build, items, remaining, answer_bytes,
                                            model)

    async def _embed_chunks(self, method: Any, build: Callable[[Sequence[Any]], Any],
                            items: Sequence[Any], remaining: float | None,
                            answer_bytes: int, model: str) -> tuple[str, list[_Result]]:
        chunks, too_large = self._chunks(items, answer_bytes)
        if not chunks:
            fingerprint = (await self.model(remaining, model)).fingerprint
            return fingerprint, [too_large[i] for i in range(len(items))]
        responses = await asyncio.gather(*(
            self._call(method, build([items[i] for i in chunk]), remaining) for chunk in chunks))
        fingerprints = {r.model_fingerprint for r in responses}
        if len(fingerprints) > 1:  # replicas mid-rollout answered with two models
            raise EmbedderUnavailable("the embedder's replicas serve different models right "
                                      "now (a rollout?); retry shortly")
        out: dict[int, _Result] = dict(too_large)
        for chunk, response in zip(chunks, responses, strict=True):
            out.update(zip(chunk, response.results, strict=True))
        return fingerprints.pop(), [out[i] for i in range(len(items))]

    def _chunks(self, items: Sequence[Any], answer_bytes: int = 0,
                ) -> tuple[list[list[int]], dict[int, _Result]]:
        """Item indices grouped into requests within the embedder's limits, and the items no
        request can carry. Answers are bounded too: `answer_bytes` per item (copy signals)
        must fit in the response."""
        budget = int(self._max_bytes * 0.9) - 4096  # protobuf framing and headers
        chunks: list[list[int]] = []
        too_large: dict[int, _Result] = {}
        size = answered = 0
        for index, item in enumerate(items):
            length = len(item) if isinstance(item, bytes) else len(item.encode()) + 16
            if length + 16 > budget:
                too_large[index] = Outcome(Problem.RESOURCE_EXHAUSTED, (
                    f"image is {length} bytes; the embedder accepts at most "
                    f"{self._max_bytes} bytes per request"))
                continue
            if (not chunks or len(chunks[-1]) >= self._max_items
                    or size + length + 16 > budget or answered + answer_bytes > budget):
                chunks.append([])
                size = answered = 0
            chunks[-1].append(index)
            size += length + 16
            answered += answer_bytes
        return chunks, too_large

    async def _call(self, method: Any, request: Any, remaining: float | None) -> Any:
        try:
            return await method(request, timeout=self._deadline(remaining),
                                metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT and "per request" in err.details():
                raise _LimitChanged from err
            if (err.code() == grpc.StatusCode.INVALID_ARGUMENT
                    and err.details().startswith("no text tower serves language")):
                # The caller's language tag: the embedder's message names those it serves.
                raise InvalidArgument(err.details()) from err
            if err.code() == grpc.StatusCode.NOT_FOUND:
                # The model a call named; the embedder's message names those it serves.
                raise ModelNotServed(err.details()) from err
            raise _translated(err) from err


class _LimitChanged(Exception):
    """The embedder refused a request for its number of items."""


def _translated(err: grpc.aio.AioRpcError) -> Exception:
    """What an embedder status means to the search service's caller. Only a transient fault
    is the caller's to retry; a refused request or credentials are this service's problem."""
    code = err.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED):
        return EmbedderUnavailable(f"the embedder is unavailable ({code.name}); retry shortly")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted("the images of this request are too large together for the "
                                 "embedder's message limit: send fewer per request")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return EmbedderUnavailable(f"the embedder refused this service's credentials "
                                   f"({code.name}): check SEARCH_EMBEDDER_TOKEN")
    return EmbedderFailed(f"the embedder failed the request ({code.name})")


def _kept(result: _Result) -> Kept:
    if not isinstance(result, pb.ImageResult):
        return Kept()
    signal = None  # none made, or of a format this build does not read
    if result.HasField("copy_signal") and result.copy_signal.format == COPY_SIGNAL_FORMAT:
        signal = bytes(result.copy_signal.data)
    return Kept(signal, bytes(result.thumbnail) or None, bytes(result.pixels) or None)


def _space(info: Any) -> ModelSpace:
    return ModelSpace(info.fingerprint, info.embedding_dim, info.model_name)


def _embedded(result: _Result) -> Embedding:
    if isinstance(result, Outcome):
        return result
    if result.HasField("error"):
        name = _PROBLEMS.get(result.error.code, "INTERNAL")
        problem = Problem.__members__.get(name, Problem.INVALID_ARGUMENT)
        return Outcome(problem, result.error.message)
    return np.asarray(result.embedding.values, dtype=np.float32)
