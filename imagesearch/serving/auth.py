"""Optional bearer-token authentication for a gRPC server.

Callers send `authorization: Bearer <token>` metadata. Tokens are compared in constant time.
Health checks and reflection stay open so Kubernetes probes and grpcurl work unauthenticated.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from imagesearch.serving.interceptors import wrap_handler

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def load_tokens(inline: str | None, path: Path | None) -> list[str]:
    """Tokens from a comma-separated string and/or a file with one token per line."""
    tokens = [t.strip() for t in (inline or "").split(",") if t.strip()]
    if path is not None:
        tokens += [line.strip() for line in path.read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
    return tokens


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    def _rejection(self, metadata: Any) -> str | None:
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if header is None:
            return "missing bearer token: send metadata 'authorization: Bearer <token>'"
        scheme, _, token = str(header).partition(" ")
        given = token.strip().encode()
        # Compare against every token so timing does not reveal which one nearly matched.
        matched = [hmac.compare_digest(given, known) for known in self._tokens]
        if scheme.lower() != "bearer" or not any(matched):
            return "invalid bearer token"
        return None

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if details.method.startswith(OPEN_PREFIXES):
            return handler
        rejection = self._rejection(details.invocation_metadata)
        if rejection is None:
            return handler
        return wrap_handler(handler, details.method, _deny_unary(rejection),
                            _deny_stream(rejection))


def _deny_unary(reason: str) -> Callable[..., Any]:
    def wrap(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        return call
    return wrap


def _deny_stream(reason: str) -> Callable[..., Any]:
    def wrap(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            yield  # pragma: no cover  (makes this an async generator, as the handler expects)
        return call
    return wrap
