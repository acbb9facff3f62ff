"""Wires the embedder service together and owns its start and stop.

Start-up order: the port opens first with health NOT_SERVING (so probes and clients get a
clear answer while the model loads), then every served bundle's manifest is read (two with one
name or fingerprint stop start-up), then the primary bundle is checked, its sessions are
created and warmed up off the event loop; then each extra bundle loads the same way, its own
health name ("imagesearch.embedder.v1.EmbedderService/<model name>") turning SERVING when it is
ready. The service's health turns SERVING when all are loaded (EMBEDDER_READY_WHEN=primary:
when the primary is). A bad bundle or an unusable required GPU stops start-up with a message
naming the cause.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from embedder_service.bundle import DEFAULT_TOWER, Bundle, Precision, load_bundle, read_manifest
from embedder_service.core import BatchingOptions, Embedder, RequestLimits
from embedder_service.errors import BundleError, ProviderError
from embedder_service.metrics import EmbedderMetrics
from embedder_service.models import ServedModel, ServedModels
from embedder_service.preprocess import ImageLimits, ImagePreprocessor
from embedder_service.runtime import GPU_PROVIDERS, RuntimeOptions, Tower, select_providers
from embedder_service.servicer import EmbedderServicer
from embedder_service.settings import EmbedderSettings
from embedder_service.text_towers import TextModel
from embedder_service.tokenizer import TextTokenizer
from embedder_service.watchdog import StallWatchdog
from imagesearch.embedder.v1 import embedder_pb2
from imagesearch.serving import host

log = logging.getLogger(__name__)
SERVICE = embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"]
# Per-model health names, as the API documents them (ModelInfo.ready).
MODEL_HEALTH_PREFIX = "imagesearch.embedder.v1.EmbedderService/"


def model_health_name(model_name: str) -> str:
    return MODEL_HEALTH_PREFIX + model_name


def choose_precision(settings: EmbedderSettings, bundle: Bundle) -> Precision:
    if settings.precision != "auto":
        return settings.precision
    on_gpu = select_providers(tuple(settings.providers))[0] in GPU_PROVIDERS
    return "fp16" if on_gpu and "fp16" in bundle.manifest.variants else "fp32"


def read_served(settings: EmbedderSettings) -> list[ServedModel]:
    """Every served bundle's manifest, the primary first (cheap; nothing loads yet)."""
    dirs = [settings.bundle, *settings.extra_bundles]
    return [ServedModel(path, read_manifest(path), is_primary=i == 0)
            for i, path in enumerate(dirs)]


def load_embedder(settings: EmbedderSettings, metrics: EmbedderMetrics | None,
                  bundle_dir: Path | None = None) -> Embedder:
    """Loads, checks and warms up one model (blocking: seconds to minutes): the bundle at
    `bundle_dir`, by default the primary."""
    bundle = load_bundle(bundle_dir or settings.bundle,
                         verify_checksums=settings.verify_checksums)
    precision = choose_precision(settings, bundle)
    variant = bundle.variant(precision)
    options = RuntimeOptions(
        providers=tuple(settings.providers), require_gpu=settings.require_gpu,
        intra_op_threads=settings.intra_op_threads,
        intra_op_spinning=settings.intra_op_spinning, device_id=settings.gpu_device_id,
        trt_cache_dir=settings.trt_cache_dir, trt_fp16=precision == "fp16")
    m = bundle.manifest
    image_tower = Tower(bundle.path(variant.image), options, _image_profile(m.image.size,
                                                                           settings.max_batch_size))
    text_models = _text_models(bundle, precision, options, settings.max_batch_size)
    if precision == "fp16" and image_tower.provider not in GPU_PROVIDERS:
        raise ProviderError("fp16 graphs need a GPU (ONNX Runtime's CPU provider cannot run "
                            "them); serve fp32 or int8 on CPU")
    embedder = Embedder(
        bundle, precision, image_tower, text_models,
        ImagePreprocessor(m.image, ImageLimits(settings.max_image_bytes, settings.max_image_pixels,
                                               settings.min_image_side),
                          jpeg_draft=settings.jpeg_draft),
        batching=BatchingOptions(settings.max_batch_size, settings.max_queue_delay_ms / 1000,
                                 settings.max_inflight_batches, settings.max_queued_items),
        limits=RequestLimits(settings.max_items_per_request, settings.max_text_chars),
        decode_threads=settings.decode_threads,
        observer=None if metrics is None else metrics.for_model(m.model_name))
    embedder.warm_up()
    return embedder


def _text_models(bundle: Bundle, precision: Precision, options: RuntimeOptions,
                 max_batch: int) -> list[TextModel]:
    """The default text tower first, then the bundle's extra towers in manifest order."""
    m = bundle.manifest
    default = TextModel(
        DEFAULT_TOWER, m.text_languages,
        Tower(bundle.path(bundle.variant(precision).text), options,
              _text_profile(m.text.context_length, max_batch)),
        TextTokenizer(bundle.path(m.text.tokenizer.file), m.text.tokenizer,
                      m.text.context_length))
    extra = [TextModel(
        tower.name, tower.languages,
        Tower(bundle.tower_graph(tower, precision), options,
              _text_profile(tower.text.context_length, max_batch)),
        TextTokenizer(bundle.path(tower.text.tokenizer.file), tower.text.tokenizer,
                      tower.text.context_length)) for tower in m.text_towers]
    return [default, *extra]


def _image_profile(size: int, batch: int) -> tuple[str, str, str]:
    shape = f"3x{size}x{size}"
    return (f"pixel_values:1x{shape}", f"pixel_values:{max(1, batch // 2)}x{shape}",
            f"pixel_values:{batch}x{shape}")


def _text_profile(context: int, batch: int) -> tuple[str, str, str]:
    return ("input_ids:1x1", f"input_ids:{max(1, batch // 2)}x16", f"input_ids:{batch}x{context}")


class EmbedderServer:
    def __init__(self, settings: EmbedderSettings,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = EmbedderMetrics(self.registry)
        self.holder = ServedModels()
        self._host = host.ServiceHost(
            settings, SERVICE, EmbedderServicer(self.holder, settings.max_message_bytes),
            self.registry)
        self._started = False
        self._watchdog: asyncio.Task[None] | None = None
        self._stall_watchdog: StallWatchdog | None = None

    @property
    def port(self) -> int:
        assert self._started, "server not started"
        return self._host.port

    @property
    def listening(self) -> bool:
        """True once the port is open (the model may still be loading)."""
        return self._started

    @property
    def metrics_port(self) -> int | None:
        return self._host.metrics_port

    async def start(self) -> int:
        """Opens the port (NOT_SERVING), loads the model, then reports SERVING."""
        port = await self._host.start(self.settings.port)
        self._started = True
        try:
            await self._load()
        except BaseException:
            await self.stop(grace=0)
            raise
        return port

    async def _load(self) -> None:
        """The primary first: the service is SERVING once it is ready; then the others."""
        loop = asyncio.get_running_loop()
        self.holder.serve(await loop.run_in_executor(None, read_served, self.settings))
        self.metrics.track_queue_depth(self.holder.queue_depth)
        self.metrics.track_longest_call(self.holder.longest_model_call_s)
        for served in self.holder:
            await self._host.set_health(model_health_name(served.name), False)
        for served in self.holder:
            await self._load_one(served)
            if served.is_primary:
                self._start_watchdog()
            stalled = self._stall_watchdog is not None and self._stall_watchdog.stalled
            if self._ready() and not stalled:
                await self._host.set_serving(True)

    def _ready(self) -> bool:
        """Whether the service takes traffic (its readiness), as EMBEDDER_READY_WHEN says."""
        if self.settings.ready_when == "primary":
            return self.holder.embedder is not None
        return all(served.ready for served in self.holder)

    async def _load_one(self, served: ServedModel) -> None:
        embedder = await asyncio.get_running_loop().run_in_executor(
            None, load_embedder, self.settings, self.metrics, served.bundle_dir)
        embedder.start()
        served.embedder = embedder
        d = embedder.description
        log.info("model ready", extra={"model": d.model_name, "fingerprint": d.fingerprint,
                                       "precision": d.precision, "providers": d.providers,
                                       "primary": served.is_primary})
        # While another model's call is stalled the whole server is out of service.
        stalled = self._stall_watchdog is not None and self._stall_watchdog.stalled
        await self._host.set_health(model_health_name(served.name), not stalled)

    def _start_watchdog(self) -> None:
        """One watchdog over every model's calls: a hang in any takes the pod out."""
        if self.settings.model_stall_timeout_s is not None:
            self._stall_watchdog = StallWatchdog(
                self.holder.longest_model_call_s, self.settings.model_stall_timeout_s,
                self._report_healthy)
            self._watchdog = asyncio.get_running_loop().create_task(self._stall_watchdog.run())

    async def _report_healthy(self, healthy: bool) -> None:
        await self._host.set_serving(healthy and self._ready())
        for served in self.holder:
            await self._host.set_health(model_health_name(served.name), healthy and served.ready)
        await self._host.report_alive(healthy)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, let in-flight calls finish within `grace`, then release the model."""
        await self._host.stop(self.settings.shutdown_grace_s if grace is None else grace)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for served in self.holder:
            if served.embedder is not None:
                await served.embedder.close()
                served.embedder = None


def main() -> None:
    settings = EmbedderSettings()
    host.run(settings, lambda: EmbedderServer(settings), (BundleError, ProviderError))


if __name__ == "__main__":
    main()
