"""The embedder core: bytes and strings in, unit vectors or per-item failures out. No grpc here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

import numpy as np

from embedder_service.batcher import BatchObserver, DynamicBatcher
from embedder_service.bundle import Bundle, Precision
from embedder_service.errors import BatchTooLarge, EmptyBatch, ModelNotReady
from embedder_service.languages import LanguageRouter, Route
from embedder_service.preprocess import (
    NO_EXTRAS,
    Extras,
    ImagePreprocessor,
    ImageRejected,
    Prepared,
    Rejection,
    finish,
)
from embedder_service.runtime import Tower
from embedder_service.text_towers import TextModel, TextTowerInfo
from embedder_service.tokenizer import TextTokenizer, TokenizedText

log = logging.getLogger(__name__)


class FailureReason(Enum):
    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT_IMAGE = "corrupt_image"
    TOO_MANY_BYTES = "too_many_bytes"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"
    TEXT_TOO_LONG = "text_too_long"
    INTERNAL = "internal"


_FROM_REJECTION = {
    Rejection.EMPTY: FailureReason.EMPTY,
    Rejection.NOT_AN_IMAGE: FailureReason.NOT_AN_IMAGE,
    Rejection.CORRUPT: FailureReason.CORRUPT_IMAGE,
    Rejection.TOO_MANY_BYTES: FailureReason.TOO_MANY_BYTES,
    Rejection.TOO_MANY_PIXELS: FailureReason.TOO_MANY_PIXELS,
    Rejection.TOO_SMALL: FailureReason.TOO_SMALL,
}


@dataclass(frozen=True)
class ItemFailure:
    reason: FailureReason
    message: str

    @property
    def status_name(self) -> str:
        return "INTERNAL" if self.reason is FailureReason.INTERNAL else "INVALID_ARGUMENT"


INTERNAL_FAILURE = ItemFailure(FailureReason.INTERNAL, "internal error while embedding this item")


@dataclass(frozen=True)
class Outcome:
    embedding: np.ndarray | None = None
    failure: ItemFailure | None = None
    truncated: bool = False
    token_count: int = 0
    copy_signal: bytes | None = None  # encoded (imagesearch.copies.signal), when asked for
    thumbnail: bytes | None = None  # JPEG, when asked for
    pixels: bytes | None = None  # JPEG (the normalised copy), when asked for
    text_tower: str = ""  # the text tower that embedded a text
    language: str = ""  # the language tag that tower was chosen for ("" for the default)


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 32
    max_delay_s: float = 0.005
    max_inflight: int = 1
    max_queue: int = 8192


@dataclass(frozen=True)
class RequestLimits:
    max_items: int = 256
    max_text_chars: int = 16384


@dataclass(frozen=True)
class ModelDescription:
    model_name: str
    fingerprint: str
    embedding_dim: int
    image_size: int
    context_length: int
    providers: list[str]
    precision: Precision
    max_batch_size: int
    text_towers: list[TextTowerInfo]


class Embedder:
    def __init__(
        self,
        bundle: Bundle,
        precision: Precision,
        image_tower: Tower,
        text_models: list[TextModel],
        preprocessor: ImagePreprocessor,
        *,
        batching: BatchingOptions,
        limits: RequestLimits,
        decode_threads: int,
        observer: BatchObserver | None = None,
    ) -> None:
        self._image_tower = image_tower
        self._texts = text_models  # the default tower first
        self._router = LanguageRouter([model.languages for model in text_models])
        self._preprocess = preprocessor
        self._batching = batching
        self.limits = limits
        self.image_limits = preprocessor.limits
        self.description = ModelDescription(
            model_name=bundle.manifest.model_name, fingerprint=bundle.manifest.fingerprint,
            embedding_dim=bundle.manifest.embedding_dim, image_size=bundle.manifest.image.size,
            context_length=bundle.manifest.text.context_length,
            providers=self._image_tower.providers, precision=precision,
            max_batch_size=batching.max_batch_size,
            text_towers=[model.info for model in text_models],
        )
        # Decoding and tokenising are CPU-bound and release the GIL in Pillow/Rust; they get a
        # pool of their own so they never wait behind model calls (and never block the loop).
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        # What callers ask beside the embedding (copy signals above all: ~7 ms of a core an
        # image, several times the decoding) is made in a pool of its own while the model call
        # goes on: an image's latency is the longer of the two, not their sum.
        self._extras_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="extras")
        self._observer = observer
        self._image_batcher: DynamicBatcher[np.ndarray, np.ndarray] | None = None

    def _batchers(self) -> list[DynamicBatcher[np.ndarray, np.ndarray]]:
        batchers = [self._image_batcher, *(model.batcher for model in self._texts)]
        return [b for b in batchers if b is not None]

    @property
    def queue_depth(self) -> int:
        return sum(b.queue_depth for b in self._batchers())

    def longest_model_call_s(self) -> float:
        """How long the oldest model call running now has been at it (0 when none runs)."""
        return max((b.longest_call_s() for b in self._batchers()), default=0.0)

    def warm_up(self) -> None:
        """Runs every tower at the smallest and largest batch (blocking; call off the loop)."""
        size, dim = self.description.image_size, self.description.embedding_dim
        for batch in sorted({1, self._batching.max_batch_size}):
            pixels = np.zeros((batch, 3, size, size), dtype=np.float32)
            texts = [model.warm_up(batch) for model in self._texts]
            for output in (self._image_tower.run(pixels), *texts):
                if output.shape != (batch, dim):
                    raise ModelNotReady(f"model produced shape {output.shape}, expected "
                                        f"{(batch, dim)}")

    def start(self) -> None:
        b = self._batching
        self._image_batcher = DynamicBatcher(
            "image", self._run_images, max_batch_size=b.max_batch_size, max_delay_s=b.max_delay_s,
            max_inflight=b.max_inflight, max_queue=b.max_queue, observer=self._observer)
        self._image_batcher.start()
        for model in self._texts:
            model.start(b.max_batch_size, b.max_delay_s, b.max_inflight, b.max_queue,
                        self._observer)

    async def close(self) -> None:
        for batcher in self._batchers():
            await batcher.close()
        self._decode_pool.shutdown(wait=True)
        self._extras_pool.shutdown(wait=True)

    def _run_images(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._image_tower.run(np.stack(pixels)))

    def check_batch(self, count: int, kind: str) -> None:
        if count == 0:
            raise EmptyBatch(f"request has no {kind}; send 1 to {self.limits.max_items}")
        if count > self.limits.max_items:
            raise BatchTooLarge(
                f"request has {count} {kind}; the limit is {self.limits.max_items} per request "
                "(split the batch, or use StreamEmbedImages for bulk work)")

    async def embed_images(self, images: Sequence[bytes], extras: Extras = NO_EXTRAS
                           ) -> list[Outcome]:
        self.check_batch(len(images), "images")
        return list(await asyncio.gather(*(self.embed_image(data, extras) for data in images)))

    async def embed_image(self, data: bytes, extras: Extras = NO_EXTRAS) -> Outcome:
        """The image's embedding and, when asked, its copy signal, thumbnail and normalised
        copy: computed in the same decode task, from the same decoded pixels."""
        batcher = self._require(self._image_batcher)
        loop = asyncio.get_running_loop()
        try:
            decoded = await loop.run_in_executor(
                self._decode_pool, self._preprocess.decode, data, extras)
        except Exception as error:
            return _rejected(error)
        finishing = (loop.run_in_executor(self._extras_pool, finish, decoded, extras)
                     if extras.wanted else None)
        outcome = Outcome()
        try:
            outcome = await self._embed(batcher, decoded.pixels)
        finally:
            if finishing is not None and outcome.embedding is None:
                finishing.cancel()  # the image failed: its extras are dropped
        if finishing is None or outcome.embedding is None:
            return outcome
        try:
            prepared: Prepared = await finishing
        except Exception as error:
            return _rejected(error)
        return Outcome(outcome.embedding, copy_signal=prepared.copy_signal,
                       thumbnail=prepared.thumbnail, pixels=prepared.normalised_copy)

    async def embed_texts(self, texts: Sequence[str],
                          languages: Sequence[str] | None = None) -> list[Outcome]:
        """Embeds each text with the tower its language tag ("", a BCP 47 tag or "auto")
        routes it to; a tag no tower serves fails the whole call (UnknownLanguage)."""
        self.check_batch(len(texts), "texts")
        tags = languages if languages is not None else [""] * len(texts)
        routes = [self._router.route(tag, text) for tag, text in zip(tags, texts, strict=True)]
        pending: dict[int, Awaitable[Outcome]] = {
            i: _failed(failure) for i, text in enumerate(texts)
            if (failure := self._text_failure(text)) is not None}
        for index, model in enumerate(self._texts):
            mine = [i for i, route in enumerate(routes) if route.tower == index
                    and i not in pending]
            if mine:
                pending.update(await self._embed_with(model, texts, routes, mine))
        return list(await asyncio.gather(*(pending[i] for i in range(len(texts)))))

    async def _embed_with(self, model: TextModel, texts: Sequence[str], routes: list[Route],
                          mine: list[int]) -> dict[int, Awaitable[Outcome]]:
        """Tokenises the tower's texts in one call; each then joins the tower's batches."""
        batcher = self._require(model.batcher)
        encoded = await asyncio.get_running_loop().run_in_executor(
            self._decode_pool, model.tokenizer.encode_batch, [texts[i] for i in mine])
        return {i: self._embed_text(batcher, tokens, model.name, routes[i].language)
                for i, tokens in zip(mine, encoded, strict=True)}

    def _text_failure(self, text: str) -> ItemFailure | None:
        if TextTokenizer.is_blank(text):
            return ItemFailure(FailureReason.EMPTY, "text is empty or only whitespace")
        if len(text) > self.limits.max_text_chars:
            return ItemFailure(
                FailureReason.TEXT_TOO_LONG,
                f"text has {len(text)} characters; the limit is {self.limits.max_text_chars} "
                f"(the model reads at most {self.description.context_length} tokens anyway)")
        return None

    async def _embed_text(self, batcher: DynamicBatcher[np.ndarray, np.ndarray],
                          tokens: TokenizedText, tower: str, language: str) -> Outcome:
        outcome = await self._embed(batcher, tokens.ids)
        return Outcome(outcome.embedding, outcome.failure, tokens.truncated, len(tokens.ids),
                       text_tower=tower, language=language)

    async def _embed(self, batcher: DynamicBatcher[np.ndarray, np.ndarray],
                     payload: np.ndarray) -> Outcome:
        try:
            return Outcome(embedding=await batcher.submit(payload))
        except ModelNotReady:
            raise
        except Exception:
            log.exception("model call failed")
            return Outcome(failure=INTERNAL_FAILURE)

    @staticmethod
    def _require(
        batcher: DynamicBatcher[np.ndarray, np.ndarray] | None,
    ) -> DynamicBatcher[np.ndarray, np.ndarray]:
        if batcher is None:
            raise ModelNotReady("the model is still loading; retry shortly")
        return batcher


def _rejected(error: Exception) -> Outcome:
    """The outcome of an image that preprocessing refused (or failed on)."""
    if isinstance(error, ImageRejected):
        return Outcome(failure=ItemFailure(_FROM_REJECTION[error.reason], str(error)))
    log.error("image preprocessing failed", exc_info=error)
    return Outcome(failure=INTERNAL_FAILURE)


async def _failed(failure: ItemFailure) -> Outcome:
    return Outcome(failure=failure)
