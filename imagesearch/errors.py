"""Domain errors shared by both services.

The cores raise these; one interceptor (imagesearch.serving.interceptors) maps each class to
its gRPC status code. Nothing here imports grpc, so the cores can be used without a network.
Messages are written for the caller: they must say what was wrong and how to fix it, and must
never carry internal details (paths on the server, tracebacks).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an error whose message is safe to send to the caller."""

    status_name = "INTERNAL"


class InvalidArgument(ServiceError):
    status_name = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    status_name = "NOT_FOUND"


class AlreadyExists(ServiceError):
    status_name = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    status_name = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    status_name = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    """A dependency (model, Milvus, embedder) is not ready; the caller may retry."""

    status_name = "UNAVAILABLE"


class Unauthenticated(ServiceError):
    status_name = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    """An authenticated caller whose token's scopes do not cover what the call touches."""

    status_name = "PERMISSION_DENIED"
