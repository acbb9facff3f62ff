"""Embedder settings, read once in main() from EMBEDDER_* environment variables."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from imagesearch.serving.settings import ServingSettings

BUNDLED_MODEL = Path(__file__).resolve().parent / "bundles" / "synthetic-clip-small"


class EmbedderSettings(ServingSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDER_", use_attribute_docstrings=True,
                                      extra="forbid")

    bundle: Path = BUNDLED_MODEL
    """Model bundle directory (from `imagesearch-export`); default: the bundled small model.
    This is the primary model: requests that name no model get it, and it loads first."""
    extra_bundles: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """More model bundles served beside the primary, each with its own sessions and batchers
    (memory: the sum of the models): a JSON list or comma-separated directories. Requests
    pick one by model name or fingerprint. Two bundles with one name or fingerprint: start-up
    fails."""
    ready_when: Literal["all", "primary"] = "all"
    """When the server reports SERVING (its readiness): once every served bundle is loaded
    (all), so that a rollout sends no traffic to a pod that would answer UNAVAILABLE for a
    model still loading; or once the primary is (primary: the others follow, each under its
    own health name)."""
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    """Variant to serve. auto: fp16 on a GPU when the bundle has it, else fp32."""
    providers: list[str] = Field(default_factory=lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    """ONNX Runtime execution providers in order of preference (JSON list)."""
    require_gpu: bool = False
    """Fail start-up instead of silently running on the CPU when no GPU provider works."""
    gpu_device_id: int = 0
    """CUDA device the GPU providers use."""
    trt_cache_dir: Path | None = None
    """Where TensorRT keeps built engines; set it, or every start rebuilds them (minutes)."""
    verify_checksums: bool = True
    """Check every bundle file's SHA-256 at start-up (catches corrupt copies)."""

    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (logged at start-up)."""
    model_stall_timeout_s: float | None = Field(120.0, gt=0)
    """A model call running longer than this takes the pod out of service and fails its
    liveness check, so Kubernetes restarts it: a GPU or driver hang would otherwise leave a
    pod that takes calls and never answers. Unset to disable."""

    max_batch_size: int = Field(32, gt=0)
    """Most items in one model call (server-side dynamic batching)."""
    max_queue_delay_ms: float = Field(5.0, ge=0)
    """How long the first item of a batch may wait for others to join it."""
    max_inflight_batches: int = Field(1, gt=0)
    """Model calls running at once per tower (2 helps keep a GPU busy)."""
    max_queued_items: int = Field(8192, gt=0)
    """Items waiting for the model before new ones wait to be queued (back-pressure)."""
    intra_op_threads: int = Field(0, ge=0)
    """ONNX Runtime threads per model call; 0 means one per physical core."""
    intra_op_spinning: bool = False
    """Let ONNX Runtime's threads spin-wait between operators (its own default): a few percent
    lower latency for single items on an idle machine, but the spinning holds the cores that
    decode images and compute copy signals, which cost a quarter of the throughput here."""
    decode_threads: int = Field(default_factory=lambda: min(8, os.cpu_count() or 1), gt=0)
    """Threads decoding images and tokenising texts, in parallel with model calls."""

    max_items_per_request: int = Field(256, gt=0)
    """Most images or texts in one EmbedImages / EmbedTexts request."""
    max_image_bytes: int = Field(32 * 1024 * 1024, gt=0)
    """Largest encoded image accepted."""
    max_image_pixels: int = Field(100_000_000, gt=0)
    """Largest decoded image accepted (width x height); guards against decompression bombs."""
    min_image_side: int = Field(8, gt=0)
    """Smallest accepted shorter side, in pixels (rejects 1x1 tracking pixels and slivers)."""
    max_text_chars: int = Field(16384, gt=0)
    """Longest accepted text, in characters."""
    jpeg_draft: bool = True
    """Decode large JPEGs at a reduced DCT scale (3-5x faster; stays >= 2x the model's input)."""

    @field_validator("extra_bundles", mode="before")
    @classmethod
    def _bundle_list(cls, value: Any) -> Any:
        """Operators write env vars by hand: '["/a", "/b"]' and '/a, /b' both work."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
