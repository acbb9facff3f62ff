"""The search service's client of the embedder: one channel, made at start-up.

- Client-side round_robin over every address the target resolves to, so a Kubernetes headless
  Service spreads calls over all embedder replicas (a ClusterIP would pin one connection).
- Retries with bounded exponential backoff on UNAVAILABLE only (gRPC's own retry policy:
  every other code is an answer, not a transient fault).
- A deadline on every call: the configured timeout, cut to the caller's remaining deadline.
- Keepalive pings, so a replica that stops answering leaves the rotation within seconds
  instead of taking its share of calls until their deadlines (see imagesearch.keepalive).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from imagesearch.embedder.v1 import embedder_pb2 as pb
from imagesearch.embedder.v1 import embedder_pb2_grpc
from imagesearch.errors import ResourceExhausted
from imagesearch.keepalive import ping_options
from search_service.errors import EmbedderFailed, EmbedderUnavailable
from search_service.registry import ModelSpace

_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # Client-side health checking: round_robin skips a replica whose grpc.health.v1 status is
    # not SERVING (loading its model, draining on SIGTERM, its model call stalled) although
    # its connection is fine, instead of queueing calls there until Kubernetes takes it out
    # of DNS and the connection ages out.
    "healthCheckConfig": {"serviceName": "imagesearch.embedder.v1.EmbedderService"},
    "methodConfig": [{
        "name": [{"service": "imagesearch.embedder.v1.EmbedderService"}],
        "retryPolicy": {
            "maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
}


@dataclass(frozen=True)
class Embedded:
    """One item's outcome: a unit vector, or the embedder's reason for refusing the item."""

    vector: np.ndarray | None = None
    code: int = 0
    message: str = ""


@dataclass(frozen=True)
class ClientTls:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(_read(self.ca_file), _read(self.key_file),
                                            _read(self.cert_file))


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


@dataclass(frozen=True)
class ChannelOptions:
    max_message_bytes: int
    keepalive_s: float
    keepalive_timeout_s: float
    tls: ClientTls | None = None


def create_channel(target: str, options: ChannelOptions) -> grpc.aio.Channel:
    args = [
        ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        *ping_options(options.keepalive_s, options.keepalive_timeout_s),
    ]
    if options.tls is not None:
        return grpc.aio.secure_channel(target, options.tls.credentials(), options=args)
    return grpc.aio.insecure_channel(target, options=args)


class EmbedderClient:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float, token: str = "") -> None:
        self._stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        self._timeout = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _deadline(self, remaining: float | None) -> float:
        return self._timeout if remaining is None else max(0.001, min(self._timeout, remaining))

    async def model(self, remaining: float | None = None) -> ModelSpace:
        info = await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), remaining)
        return ModelSpace(info.model.fingerprint, info.model.embedding_dim,
                          info.model.model_name)

    async def embed_images(self, images: Sequence[bytes],
                           remaining: float | None = None) -> tuple[str, list[Embedded]]:
        request = pb.EmbedImagesRequest(images=[pb.ImageInput(data=d) for d in images])
        response = await self._call(self._stub.EmbedImages, request, remaining)
        return response.model_fingerprint, [_embedded(r) for r in response.results]

    async def embed_texts(self, texts: Sequence[str],
                          remaining: float | None = None) -> tuple[str, list[Embedded]]:
        request = pb.EmbedTextsRequest(texts=[pb.TextInput(text=t) for t in texts])
        response = await self._call(self._stub.EmbedTexts, request, remaining)
        return response.model_fingerprint, [_embedded(r) for r in response.results]

    async def _call(self, method: Any, request: Any, remaining: float | None) -> Any:
        try:
            return await method(request, timeout=self._deadline(remaining),
                                metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise _translated(err) from err


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


def _embedded(result: pb.ImageResult | pb.TextResult) -> Embedded:
    if result.HasField("error"):
        return Embedded(code=result.error.code, message=result.error.message)
    return Embedded(vector=np.asarray(result.embedding.values, dtype=np.float32))
