"""Search service settings, read once in main() from SEARCH_* environment variables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from imagesearch.serving.settings import ServingSettings

S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?")


class SearchSettings(ServingSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCH_", use_attribute_docstrings=True,
                                      extra="forbid")
    scoped_tokens: ClassVar[bool] = True

    milvus_uri: str = "data/imagesearch.db"
    """A file path for embedded Milvus Lite (one process per file), or http://host:19530 for a
    Milvus server or cluster."""
    milvus_token: str | None = None
    """Milvus credentials ("user:password" or an API key); unset for none."""
    milvus_token_file: Path | None = None
    """File holding the Milvus credentials instead (e.g. a mounted Secret); read at start-up."""
    milvus_tls_ca_file: Path | None = None
    """CA (PEM) to verify the Milvus server's certificate, for an https:// milvus_uri (Milvus
    with common.security.tlsMode 1); unset: the system's CAs. Read at start-up."""
    milvus_timeout_s: float = Field(10.0, gt=0)
    """Deadline of each Milvus call (creating or loading a collection: at least 120 s): a
    Milvus that stops answering fails calls with UNAVAILABLE and frees their threads."""
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
    image_store: str | None = None
    """Where what is kept of each image beside its vector goes - its copy signal, for copy
    detection (FindDuplicates' COPIES mode): a folder, s3://bucket[/prefix] (S3-compatible
    object storage, which every replica shares), or "off". Default: beside a Milvus Lite file
    (<file>.images); off with a Milvus server, whose replicas need storage they all share."""
    image_store_endpoint: str | None = None
    """The object store's URL for an s3:// image store (e.g. http://minio:9000); unset: AWS S3,
    or AWS_ENDPOINT_URL. Credentials come the AWS way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    web identity, instance roles) or from image_store_credentials_file."""
    image_store_credentials_file: Path | None = None
    """An AWS credentials file for the s3:// image store ([default] with aws_access_key_id and
    aws_secret_access_key), e.g. a mounted Secret."""
    keep_pixels: Literal["normalized", "original", "off"] = "normalized"
    """What the image store keeps of each image added, to embed it again with another model
    (StartMigration, EvaluateModels): "normalized", a JPEG (quality 90) at most pixels_side on
    its longer side, made by the embedder from its decode (~20-60 KB a photo); "original", the bytes
    as sent; "off", nothing (collections cannot move to another model)."""
    pixels_side: int = Field(448, ge=64, le=2048)
    """The longer side of a "normalized" copy: at least the largest input of any model you
    may serve (224 for ViT-B/32, 336 or 448 for the larger CLIPs)."""
    migration_poll_s: float = Field(5.0, gt=0)
    """How often migrations are looked for (one started here starts at once): after a restart,
    a replica takes over a copy within this plus migration_lease_s."""
    migration_lease_s: float = Field(30.0, gt=0)
    """How long a replica's claim on a migration's copy holds without progress."""
    migration_settle_s: float = Field(120.0, ge=0)
    """How long after its start a migration waits before its final reconciliation: at least
    the longest a write that began before the start may take to land (an add makes several
    Milvus calls of milvus_timeout_s and an embedder call of embedder_timeout_s). Rows
    written in this window before the start, and all written since, are embedded again."""

    embedder_target: str = "127.0.0.1:50051"
    """Embedder address; on Kubernetes dns:///<headless-service>:50051 reaches every replica."""
    embedder_timeout_s: float = Field(30.0, gt=0)
    """Deadline of each embedder call (cut to the caller's remaining deadline)."""
    embedder_keepalive_s: float = Field(20.0, gt=0)
    """How often each embedder connection is pinged: a replica that stops answering leaves the
    rotation within this plus embedder_keepalive_timeout_s. At least the embedder's
    EMBEDDER_MIN_CLIENT_PING_INTERVAL_S, or it closes the connection."""
    embedder_keepalive_timeout_s: float = Field(10.0, gt=0)
    """How long such a ping may go unanswered before the connection is dropped."""
    embedder_tls_ca_file: Path | None = None
    """CA (PEM) to verify the embedder's certificate; setting it enables TLS to the embedder."""
    embedder_tls_cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS to the embedder."""
    embedder_tls_key_file: Path | None = None
    """Client private key (PEM) for mutual TLS to the embedder."""
    embedder_token: str | None = None
    """Bearer token sent to the embedder, when the embedder has EMBEDDER_AUTH_TOKENS set."""
    embedder_token_file: Path | None = None
    """File holding that token instead (e.g. a mounted Secret); read at start-up."""
    sweep_interval_s: float = Field(300.0, gt=0)
    """How often the rows of deleted collections that late writes left behind are removed."""

    port: int = Field(50052, ge=0, le=65535)
    """gRPC port; 0 picks a free one (logged at start-up)."""
    http_port: int | None = Field(None, ge=0, le=65535)
    """HTTP/JSON port: the same API at the routes docs/api.md lists, with the same tokens and
    errors (e.g. 8080), and the search page at /; unset: off; 0 picks a free one. HTTPS with
    the gRPC port's certificate when tls_cert_file is set (and client certificates required
    when tls_client_ca_file is)."""
    health_check_interval_s: float = Field(2.0, gt=0)
    """How often the embedder and Milvus are checked for the health status."""

    def embedder_credentials(self) -> str:
        """The embedder token, from embedder_token or embedder_token_file; "" for none."""
        if self.embedder_token_file is not None:
            return self.embedder_token_file.read_text().strip()
        return self.embedder_token or ""

    def image_location(self) -> Path | str | None:
        """The image store: a folder, an s3:// URI, or None when there is none."""
        if self.image_store == "off":
            return None
        if self.image_store and self.image_store.startswith("s3://"):
            return self.image_store
        if self.image_store:
            return Path(self.image_store).expanduser()
        if "://" in self.milvus_uri:
            return None
        return Path(self.milvus_uri + ".images").expanduser()

    def milvus_credentials(self) -> str:
        """The token, from milvus_token or milvus_token_file; "" for none."""
        if self.milvus_token_file is not None:
            return self.milvus_token_file.read_text().strip()
        return self.milvus_token or ""

    @model_validator(mode="after")
    def _object_store_uri(self) -> SearchSettings:
        # S3's bucket naming rules, so a typo fails start-up instead of every health check.
        store = self.image_store or ""
        if store.lower().startswith("s3:") and not S3_URI.fullmatch(store):
            raise ValueError(f"image_store {store!r}: an object store is s3://bucket[/prefix], "
                             "the bucket 3-63 lower-case letters, digits, dots and hyphens")
        return self

    @model_validator(mode="after")
    def _one_milvus_token(self) -> SearchSettings:
        if self.milvus_token is not None and self.milvus_token_file is not None:
            raise ValueError("set milvus_token or milvus_token_file, not both")
        return self

    @model_validator(mode="after")
    def _milvus_tls_needs_https(self) -> SearchSettings:
        # pymilvus turns TLS on for https:// only: a CA beside http:// would be ignored.
        if self.milvus_tls_ca_file is not None and not self.milvus_uri.startswith("https://"):
            raise ValueError("milvus_tls_ca_file needs an https:// milvus_uri")
        return self

    @model_validator(mode="after")
    def _one_embedder_token(self) -> SearchSettings:
        if self.embedder_token is not None and self.embedder_token_file is not None:
            raise ValueError("set embedder_token or embedder_token_file, not both")
        return self

    @model_validator(mode="after")
    def _embedder_tls_pair(self) -> SearchSettings:
        if (self.embedder_tls_cert_file is None) != (self.embedder_tls_key_file is None):
            raise ValueError("set both embedder_tls_cert_file and embedder_tls_key_file")
        return self
