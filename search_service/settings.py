"""Search service settings, read once in main() from SEARCH_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SearchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCH_", use_attribute_docstrings=True,
                                      extra="forbid")

    milvus_uri: str = "data/imagesearch.db"
    """A file path for embedded Milvus Lite (one process per file), or http://host:19530 for a
    Milvus server or cluster."""
    milvus_token: str | None = None
    """Milvus credentials ("user:password" or an API key); unset for none."""
    milvus_consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = "Session"
    """Session: reads see this instance's own writes at once, without Strong's per-call cost."""
    index_type: str | None = None
    """Vector index; default HNSW on a Milvus server and AUTOINDEX on Milvus Lite."""
    hnsw_m: int = Field(16, gt=0)
    """HNSW graph degree (memory vs recall)."""
    hnsw_ef_construction: int = Field(200, gt=0)
    """HNSW build-time candidate list (build time vs recall)."""
    search_ef: int = Field(128, gt=0)
    """HNSW search-time candidate list (latency vs recall); at least top_k."""
    store_threads: int = Field(8, gt=0)
    """Threads running Milvus calls (pymilvus is synchronous; never on the event loop)."""

    embedder_target: str = "127.0.0.1:50051"
    """Embedder address; on Kubernetes dns:///<headless-service>:50051 reaches every replica."""
    embedder_timeout_s: float = Field(30.0, gt=0)
    """Deadline of each embedder call (cut to the caller's remaining deadline)."""
    embedder_tls_ca_file: Path | None = None
    """CA (PEM) to verify the embedder's certificate; setting it enables TLS to the embedder."""
    embedder_tls_cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS to the embedder."""
    embedder_tls_key_file: Path | None = None
    """Client private key (PEM) for mutual TLS to the embedder."""

    host: str = "127.0.0.1"
    """Address to listen on; use 0.0.0.0 (or [::]) in a container."""
    port: int = Field(50052, ge=0, le=65535)
    """gRPC port; 0 picks a free one (logged at start-up)."""
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
    """Largest gRPC message accepted or sent (AddImages carries whole photos)."""
    shutdown_grace_s: float = Field(20.0, ge=0)
    """On SIGTERM, how long in-flight requests get to finish."""
    health_check_interval_s: float = Field(2.0, gt=0)
    """How often the embedder and Milvus are checked for the health status."""

    log_level: str = "INFO"
    """Python logging level."""
    log_format: Literal["json", "text"] = "json"
    """json: one object per line (for log pipelines); text: for a terminal."""

    @model_validator(mode="after")
    def _tls_pairs(self) -> SearchSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        if (self.embedder_tls_cert_file is None) != (self.embedder_tls_key_file is None):
            raise ValueError("set both embedder_tls_cert_file and embedder_tls_key_file")
        return self
