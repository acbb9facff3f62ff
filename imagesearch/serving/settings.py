"""Settings every gRPC service of ours has; each service subclasses with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import grpc
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagesearch.serving.auth import BearerTokenInterceptor, Grant, load_grants, load_tokens
from imagesearch.serving.grpc_server import Keepalive, ServerOptions, TlsFiles
from imagesearch.serving.interceptors import (
    ErrorInterceptor,
    ObservabilityInterceptor,
    ServerMetrics,
)


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(use_attribute_docstrings=True, extra="forbid")
    # Whether tokens may carry scopes (LEVEL:PATTERN, see imagesearch.serving.auth): only a
    # service with something to scope checks them.
    scoped_tokens: ClassVar[bool] = False

    host: str = "127.0.0.1"
    """Address to listen on; use 0.0.0.0 (or [::]) in a container."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint; unset disables it."""
    metrics_host: str = "127.0.0.1"
    """Address of the /metrics endpoint."""
    tls_cert_file: Path | None = None
    """Server certificate (PEM); with tls_key_file enables TLS."""
    tls_key_file: Path | None = None
    """Server private key (PEM)."""
    tls_client_ca_file: Path | None = None
    """CA (PEM) that client certificates must chain to; setting it requires mutual TLS."""
    max_message_bytes: int = Field(64 * 1024 * 1024, gt=0)
    """Largest gRPC message accepted or sent (the gRPC default of 4 MiB is too small for photos)."""
    max_connection_age_s: float | None = Field(None, gt=0)
    """Close client connections after this age so they re-resolve and reach new replicas."""
    max_connection_age_grace_s: float = Field(30.0, ge=0)
    """Then how long calls still running on the old connection get to finish; a longer
    IngestImages stream is cut with UNAVAILABLE and resumes from its last acknowledgement."""
    keepalive_time_s: float = Field(60.0, gt=0)
    """How often the server pings each client connection to find clients that are gone."""
    keepalive_timeout_s: float = Field(20.0, gt=0)
    """How long such a ping may go unanswered before the connection and its calls are dropped."""
    min_client_ping_interval_s: float = Field(5.0, gt=0)
    """Clients may send keepalive pings this often, with or without calls in flight; more often
    gets the connection closed (GOAWAY too_many_pings). gRPC-Go and Java clients ping every
    10 s at the most; gRPC's default here would be 5 minutes."""
    shutdown_grace_s: float = Field(20.0, ge=0)
    """On SIGTERM, how long in-flight requests get to finish."""
    auth_tokens: str | None = None
    """Comma-separated bearer tokens; when set (or auth_tokens_file), every call but health
    checks and reflection must send 'authorization: Bearer <token>'. On the search service a
    token may be followed by its scopes, space-separated: read:NAME, write:PREFIX*, admin:*
    (none: everything)."""
    auth_tokens_file: Path | None = None
    """File with one bearer token per line ('#' starts a comment), e.g. a mounted Secret; on
    the search service each token may be followed by its scopes, as in auth_tokens."""
    log_level: str = "INFO"
    """Python logging level."""
    log_format: Literal["json", "text"] = "json"
    """json: one object per line (for log pipelines); text: for a terminal."""

    @model_validator(mode="after")
    def _server_tls(self) -> ServingSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    def interceptors(self, metrics: ServerMetrics) -> list[grpc.aio.ServerInterceptor]:
        """Outermost first: observe every call, then authenticate, then map errors."""
        chain: list[grpc.aio.ServerInterceptor] = [ObservabilityInterceptor(metrics)]
        if self.auth_tokens is not None or self.auth_tokens_file is not None:
            grants = self.grants()
            if not grants:
                raise ValueError("authentication is configured but no token was given")
            chain.append(BearerTokenInterceptor(grants))
        return [*chain, ErrorInterceptor()]

    def grants(self) -> list[Grant]:
        if self.scoped_tokens:
            return load_grants(self.auth_tokens, self.auth_tokens_file)
        return [Grant(t) for t in load_tokens(self.auth_tokens, self.auth_tokens_file)]

    def server_options(self, port: int) -> ServerOptions:
        return ServerOptions(self.host, port, self.max_message_bytes, self.tls_files(),
                             self.max_connection_age_s, self.max_connection_age_grace_s,
                             self.keepalive())

    def keepalive(self) -> Keepalive:
        return Keepalive(self.keepalive_time_s, self.keepalive_timeout_s,
                         self.min_client_ping_interval_s)

    def tls_files(self) -> TlsFiles | None:
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
