"""Server interceptors, one job each, built as a list at start-up.

- ErrorInterceptor: the one place domain errors become gRPC statuses. ServiceError subclasses
  map to their code with their (caller-safe) message; anything else becomes INTERNAL with a
  generic message while the traceback goes to the log, never to the caller.
- ObservabilityInterceptor: an access-log line and Prometheus metrics per call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from imagesearch.errors import ServiceError
from imagesearch.serving.handlers import MalformedRequest

log = logging.getLogger("imagesearch.access")
errors_log = logging.getLogger("imagesearch.errors")

Handler = Any  # grpc.RpcMethodHandler: a namedtuple of behaviours
UnaryWrapper = Callable[[Callable[..., Awaitable[Any]], str], Callable[..., Awaitable[Any]]]
StreamBehavior = Callable[..., AsyncIterator[Any]]
StreamWrapper = Callable[[StreamBehavior, str], StreamBehavior]


def wrap_handler(handler: Handler | None, method: str, unary: UnaryWrapper,
          stream: StreamWrapper) -> Handler | None:
    """Returns `handler` with its behaviour wrapped, whatever its streaming kind."""
    if handler is None:
        return None
    h: Any = handler
    if h.unary_unary:
        return h._replace(unary_unary=unary(h.unary_unary, method))
    if h.stream_unary:
        return h._replace(stream_unary=unary(h.stream_unary, method))
    # A streaming behaviour either yields its responses (an async generator, like ours) or is
    # a coroutine that sends them with context.write (grpc_health's Watch): wrapped as such.
    if h.unary_stream:
        wrap = stream if inspect.isasyncgenfunction(h.unary_stream) else unary
        return h._replace(unary_stream=wrap(h.unary_stream, method))
    wrap = stream if inspect.isasyncgenfunction(h.stream_stream) else unary
    return h._replace(stream_stream=wrap(h.stream_stream, method))


def _checked(request: Any) -> Any:
    """Raises INVALID_ARGUMENT for undecodable requests, in unary and streaming calls alike."""
    if isinstance(request, MalformedRequest):
        raise _Malformed(request.describe())
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


class _Malformed(ServiceError):
    status_name = "INVALID_ARGUMENT"


async def _abort(context: grpc.aio.ServicerContext, err: Exception, method: str) -> None:
    if isinstance(err, ServiceError):
        await context.abort(getattr(grpc.StatusCode, err.status_name), str(err))
    errors_log.error("unhandled error in %s", method, exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, "internal server error; the server log has "
                        "the details")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        return wrap_handler(handler, details.method, self._unary, self._stream)

    @staticmethod
    def _unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(_checked(request), context)
            except grpc.aio.AbortError:
                raise
            except Exception as err:
                await _abort(context, err, method)
        return call

    @staticmethod
    def _stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in behavior(_checked(request), context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as err:
                await _abort(context, err, method)
        return call


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter("grpc_server_handled", "RPCs completed, by method and status code.",
                               ["method", "code"], registry=registry)
        self.latency = Histogram(
            "grpc_server_handling_seconds", "Time from RPC start to its status, by method.",
            ["method"], registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        return wrap_handler(handler, details.method, self._unary, self._stream)

    def _record(self, method: str, context: grpc.aio.ServicerContext, peer: str, started: float,
                failed: BaseException | None) -> None:
        code = _code_name(context)
        if failed is not None and code == "OK":
            code = "CANCELLED" if isinstance(failed, asyncio.CancelledError) else "UNKNOWN"
        elapsed = time.perf_counter() - started
        self._metrics.handled.labels(method, code).inc()
        self._metrics.latency.labels(method).observe(elapsed)
        log.info("rpc", extra={"method": method, "code": code, "ms": round(elapsed * 1000, 2),
                               "peer": peer})

    def _unary(self, behavior: Callable[..., Awaitable[Any]], method: str) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # The peer is read while the call is alive: once a cancelled call's generator is
            # finalised, grpc may have freed the core call, and context.peer() then segfaults.
            peer, started, failed = context.peer(), time.perf_counter(), None
            try:
                return await behavior(request, context)
            except BaseException as err:
                failed = err
                raise
            finally:
                self._record(method, context, peer, started, failed)
        return call

    def _stream(self, behavior: Callable[..., AsyncIterator[Any]], method: str) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            peer, started, failed = context.peer(), time.perf_counter(), None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as err:
                failed = err
                raise
            finally:
                self._record(method, context, peer, started, failed)
        return call
