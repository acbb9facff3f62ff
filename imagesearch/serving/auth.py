"""Bearer-token authentication for a gRPC server, with optional scopes per token.

Callers send `authorization: Bearer <token>` metadata. Tokens are compared in constant time.
Health checks and reflection stay open so Kubernetes probes and grpcurl work unauthenticated.

A token is configured with what it may do (see `parse_grant`): nothing after the token means
everything; otherwise scopes `LEVEL:PATTERN`, LEVEL one of read < write < admin (each implies
the ones before it), PATTERN a resource name or a prefix ending in '*'. The interceptor only
authenticates; the grant of the caller's token is then in `current_grant()` for the service
to check against what the call touches (the search service: search_service.transports.access).
"""

from __future__ import annotations

import contextvars
import enum
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from imagesearch.serving.interceptors import wrap_handler

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Level(enum.IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True)
class Scope:
    level: Level
    pattern: str

    def covers(self, level: Level, resource: str) -> bool:
        if level > self.level:
            return False
        if self.pattern.endswith("*"):
            return resource.startswith(self.pattern[:-1])
        return resource == self.pattern


@dataclass(frozen=True)
class Grant:
    """One token and what it may do: everything when it has no scopes."""

    token: str
    scopes: tuple[Scope, ...] = ()

    @property
    def unrestricted(self) -> bool:
        return not self.scopes

    def allows(self, level: Level, resource: str) -> bool:
        return self.unrestricted or any(s.covers(level, resource) for s in self.scopes)


def parse_grant(line: str) -> Grant:
    """'TOKEN [LEVEL:PATTERN ...]', e.g. 'k3y read:shop-* write:shop-eu admin:lab'."""
    token, *words = line.split()
    scopes = []
    for word in words:
        level, found, pattern = word.partition(":")
        if not found or level.upper() not in Level.__members__ or not pattern:
            raise ValueError(f"scope {word!r} is not LEVEL:PATTERN with LEVEL one of read, "
                             "write, admin (e.g. read:photos or write:team-*)")
        if "*" in pattern[:-1]:
            raise ValueError(f"scope {word!r}: '*' may only end a pattern")
        scopes.append(Scope(Level[level.upper()], pattern))
    return Grant(token, tuple(scopes))


def load_grants(inline: str | None, path: Path | None) -> list[Grant]:
    """Grants from a comma-separated string and/or a file with one per line ('#' comments)."""
    lines = [t.strip() for t in (inline or "").split(",") if t.strip()]
    if path is not None:
        lines += [line.strip() for line in path.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    grants = [parse_grant(line) for line in lines]
    if len({g.token for g in grants}) != len(grants):
        raise ValueError("a token is configured twice: give each token one line")
    return grants


def load_tokens(inline: str | None, path: Path | None) -> list[str]:
    """The tokens alone, for services that have nothing to scope (the embedder)."""
    grants = load_grants(inline, path)
    if any(not g.unrestricted for g in grants):
        raise ValueError("this service has no collections: its tokens take no scopes")
    return [g.token for g in grants]


_GRANT: contextvars.ContextVar[Grant | None] = contextvars.ContextVar("grant", default=None)


def current_grant() -> Grant | None:
    """The grant of the token that authenticated this call; None when auth is off."""
    return _GRANT.get()


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, grants: Iterable[Grant | str]) -> None:
        self._grants = [g if isinstance(g, Grant) else Grant(g) for g in grants]
        self._tokens = [g.token.encode() for g in self._grants]

    def _authenticate(self, metadata: Any) -> Grant | str:
        """The caller's grant, or why it has none."""
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if header is None:
            return "missing bearer token: send metadata 'authorization: Bearer <token>'"
        scheme, _, token = str(header).partition(" ")
        given = token.strip().encode()
        # Compare against every token so timing does not reveal which one nearly matched.
        matched = [hmac.compare_digest(given, known) for known in self._tokens]
        if scheme.lower() != "bearer" or not any(matched):
            return "invalid bearer token"
        return self._grants[matched.index(True)]

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if details.method.startswith(OPEN_PREFIXES):
            return handler
        found = self._authenticate(details.invocation_metadata)
        if isinstance(found, Grant):
            return wrap_handler(handler, details.method, _as_unary(found), _as_stream(found))
        return wrap_handler(handler, details.method, _deny_unary(found), _deny_stream(found))


def _as_unary(grant: Grant) -> Callable[..., Any]:
    def wrap(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _GRANT.set(grant)  # this call's task only
            return await behavior(request, context)
        return call
    return wrap


def _as_stream(grant: Grant) -> Callable[..., Any]:
    def wrap(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _GRANT.set(grant)
            async for response in behavior(request, context):
                yield response
        return call
    return wrap


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
