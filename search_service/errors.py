"""Errors of the search core; each maps to one gRPC status (see imagesearch.errors)."""

from __future__ import annotations

from imagesearch.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)


class InvalidName(InvalidArgument):
    pass


class InvalidFilter(InvalidArgument):
    pass


class CollectionNotFound(NotFound):
    pass


class CollectionExists(AlreadyExists):
    pass


class ModelMismatch(FailedPrecondition):
    """The collection was built with another embedding model: vector spaces must not mix."""


class ModelNotServed(NotFound):
    """The embedder does not serve the model a call named."""


class MigrationConflict(FailedPrecondition):
    """A migration control that its migration's state does not allow."""


class MilvusUnavailable(Unavailable):
    pass


class EmbedderUnavailable(Unavailable):
    pass


class EmbedderFailed(ServiceError):
    """The embedder answered a whole request with an error that no retry will fix (its
    message for the caller is safe: it names only the embedder's status)."""

    status_name = "INTERNAL"


class ImageStoreUnavailable(Unavailable):
    """The store of copy signals (and other per-image bytes) cannot be read or written."""
