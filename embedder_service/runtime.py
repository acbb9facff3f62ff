"""ONNX Runtime sessions for the two towers, with execution providers chosen by preference.

onnxruntime-gpu lists TensorRT and CUDA as *available* even where no GPU or CUDA library
exists; creating a session then logs an error and silently runs on the CPU. So we never trust
the available list: we report what `session.get_providers()` says the session actually got,
and `require_gpu` turns a fallback into a start-up failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedder_service.errors import BundleError, ProviderError

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
DEFAULT_PREFERENCE = (*GPU_PROVIDERS, "CPUExecutionProvider")


@dataclass(frozen=True)
class RuntimeOptions:
    providers: tuple[str, ...] = DEFAULT_PREFERENCE
    require_gpu: bool = False
    # 0 lets ONNX Runtime use one thread per physical core.
    intra_op_threads: int = 0
    # ONNX Runtime's default: its threads spin-wait for work between operators and calls.
    intra_op_spinning: bool = False
    device_id: int = 0
    trt_cache_dir: Path | None = None
    trt_fp16: bool = False
    extra_provider_options: dict[str, dict[str, str]] = field(default_factory=dict)


def select_providers(preferred: tuple[str, ...]) -> list[str]:
    """The preferred providers this ONNX Runtime build has, CPU always last as the fallback."""
    available = set(ort.get_available_providers())
    unknown = [p for p in preferred if p not in available and p not in DEFAULT_PREFERENCE]
    if unknown:
        raise ProviderError(
            f"unknown execution providers {unknown}; this onnxruntime build has "
            f"{sorted(available)}"
        )
    chosen = [p for p in preferred if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


class Tower:
    """One ONNX graph (image or text tower): a single input, a single [N, D] output."""

    def __init__(
        self,
        path: Path,
        options: RuntimeOptions,
        trt_profile: tuple[str, str, str] | None = None,
    ) -> None:
        self.path = path
        self.session = _create_session(path, options, trt_profile)
        self.providers: list[str] = self.session.get_providers()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{path}: expected one input and one output, got "
                              f"{len(inputs)} and {len(outputs)}")
        self.input_name = inputs[0].name
        self.input_shape = inputs[0].shape
        self.output_name = outputs[0].name
        self.output_dim = outputs[0].shape[-1]

    @property
    def provider(self) -> str:
        return self.providers[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        (features,) = self.session.run([self.output_name], {self.input_name: batch})
        features = np.asarray(features, dtype=np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        # Normalised here in float32 rather than in the graph, so fp16 graphs give unit
        # vectors to float32 precision too.
        unit: np.ndarray = features / np.maximum(norms, 1e-12)
        return unit


def _session_options(options: RuntimeOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    # Explicit thread counts: the default can oversubscribe a container's CPU quota.
    so.intra_op_num_threads = options.intra_op_threads
    # One graph runs at a time per session; parallelism comes from intra-op threads and from
    # batching, so inter-op threads would only compete with them.
    so.inter_op_num_threads = 1
    # Spinning threads hold the cores that decode images and compute copy signals beside the
    # model: off, the service streamed ViT-B-32 on 2 cores at 37 img/s instead of 30 (the tower
    # alone: the same at batch 32, ~5% slower at batch 1; bench/RESULTS.md).
    so.add_session_config_entry("session.intra_op.allow_spinning",
                                "1" if options.intra_op_spinning else "0")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Batch shapes vary from call to call; the memory-pattern planner only helps fixed shapes.
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    return so


def _provider_options(
    provider: str, options: RuntimeOptions, trt_profile: tuple[str, str, str] | None
) -> dict[str, str]:
    if provider == "CUDAExecutionProvider":
        return {"device_id": str(options.device_id)}
    if provider == "TensorrtExecutionProvider":
        trt: dict[str, str] = {"device_id": str(options.device_id),
                               "trt_fp16_enable": str(options.trt_fp16)}
        if options.trt_cache_dir is not None:
            # Building a TensorRT engine takes minutes; the cache makes restarts fast.
            trt.update(trt_engine_cache_enable="True",
                       trt_engine_cache_path=str(options.trt_cache_dir))
        if trt_profile is not None:
            trt.update(trt_profile_min_shapes=trt_profile[0], trt_profile_opt_shapes=trt_profile[1],
                       trt_profile_max_shapes=trt_profile[2])
        return trt
    return {}


def _create_session(
    path: Path, options: RuntimeOptions, trt_profile: tuple[str, str, str] | None
) -> ort.InferenceSession:
    providers = select_providers(options.providers)
    provider_options = [
        {**_provider_options(p, options, trt_profile), **options.extra_provider_options.get(p, {})}
        for p in providers
    ]
    try:
        session = ort.InferenceSession(
            str(path), sess_options=_session_options(options),
            providers=providers, provider_options=provider_options,
        )
    except Exception as err:  # ONNX Runtime raises several unrelated types for a bad graph
        raise BundleError(f"{path}: ONNX Runtime cannot load this graph: {err}") from err
    actual = session.get_providers()
    log.info("session ready", extra={"graph": path.name, "requested": providers, "actual": actual})
    if options.require_gpu and actual[0] not in GPU_PROVIDERS:
        raise ProviderError(
            f"{path.name}: a GPU provider was required but the session runs on {actual[0]} "
            f"(requested {providers}); check the CUDA/cuDNN libraries and the GPU driver"
        )
    return session
