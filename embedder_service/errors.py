"""Errors of the embedder core."""

from __future__ import annotations

from imagesearch.errors import InvalidArgument, NotFound, Unavailable


class BundleError(Exception):
    """The model bundle is missing, partial or corrupt; start-up must stop.

    The message names the file and what is wrong with it (this goes to the operator's log,
    never to a gRPC caller).
    """


class ProviderError(Exception):
    """The requested execution provider (e.g. a GPU) is not usable; start-up must stop."""


class EmptyBatch(InvalidArgument):
    pass


class BatchTooLarge(InvalidArgument):
    pass


class ModelNotReady(Unavailable):
    pass


class ModelNotFound(NotFound):
    """A request named a model this server does not serve."""
