"""The one channel factory of ours: the search service's channel to the embedder, and every
client's (SearchClient, the CLI) to the search service.

- round_robin over every address the target resolves to, so a Kubernetes headless Service
  spreads calls over all replicas (pick_first would pin one connection);
- retries with bounded exponential backoff on UNAVAILABLE only (gRPC's own retry policy:
  every other code is an answer, not a transient fault);
- optional client-side health checking: round_robin skips a replica whose grpc.health.v1
  status is not SERVING (loading its model, draining on SIGTERM) although its connection is up;
- keepalive pings (imagesearch.keepalive), message limits, TLS or mutual TLS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from imagesearch.keepalive import ping_options


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
class ChannelConfig:
    service: str  # full name, e.g. imagesearch.search.v1.SearchService
    max_message_bytes: int = 64 << 20
    keepalive_s: float = 20.0
    keepalive_timeout_s: float = 10.0
    tls: ClientTls | None = None
    # Skip replicas whose health for `service` is not SERVING (needs grpc.health.v1 there).
    health_checked: bool = False
    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def service_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{
                "name": [{"service": self.service}],
                "retryPolicy": {
                    "maxAttempts": self.max_attempts,
                    "initialBackoff": f"{self.initial_backoff_s}s",
                    "maxBackoff": f"{self.max_backoff_s}s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }],
        }
        if self.health_checked:
            config["healthCheckConfig"] = {"serviceName": self.service}
        return config

    def arguments(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.service_config", json.dumps(self.service_config())),
            ("grpc.enable_retries", 1),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            *ping_options(self.keepalive_s, self.keepalive_timeout_s),
        ]


def create_channel(target: str, config: ChannelConfig) -> grpc.Channel:
    """A blocking channel (the Python client and the CLI)."""
    if config.tls is not None:
        return grpc.secure_channel(target, config.tls.credentials(), options=config.arguments())
    return grpc.insecure_channel(target, options=config.arguments())


def create_aio_channel(target: str, config: ChannelConfig) -> grpc.aio.Channel:
    """An asyncio channel (the search service's, to the embedder)."""
    if config.tls is not None:
        return grpc.aio.secure_channel(target, config.tls.credentials(),
                                       options=config.arguments())
    return grpc.aio.insecure_channel(target, options=config.arguments())
