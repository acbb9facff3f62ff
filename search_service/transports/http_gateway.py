"""The search API over HTTP/JSON, at the routes the protos' google.api.http options declare,
in the protobuf JSON mapping (docs/api.md lists them).

A gateway in the service's own process and event loop, the way grpc-gateway and Envoy's
gRPC-JSON transcoder work: each HTTP request becomes the gRPC call of its route, made to this
service's own gRPC server (over a Unix socket only this process's user can open), so tokens
and scopes (the Authorization header is passed on), message limits, errors, access logs and
metrics are the gRPC path's - nothing is implemented twice. With TLS on, the port is HTTPS.
The gRPC status becomes the HTTP status (google.rpc.Code's mapping) and the body
{"code": <gRPC code>, "message": "..."}. IngestImages, a client stream, has no route: send
batches to AddImages.

It also serves the search page (search_service/web/) at `/`: static files that call the routes
above from the browser, under a Content-Security-Policy that allows nothing but this origin.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote

import grpc
from aiohttp import web
from google.api import annotations_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from imagesearch.serving.grpc_server import PortUnavailable

HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500,
}
# The page's files by path, with their types. Read once, at start-up.
_PAGE_FILES = {"/": ("index.html", "text/html"), "/web/app.js": ("app.js", "text/javascript"),
               "/web/app.css": ("app.css", "text/css")}
# Scripts, styles and calls from this origin only; images also as data: (thumbnails) and blob:
# (the picked file); no framing (clickjacking), no forms posting elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# JSON carries bytes as base64 (4/3 of their size), and a request names more than its bytes.
_BODY_SLACK = 64 << 10


@dataclass(frozen=True)
class Route:
    verb: str
    path: re.Pattern[str]
    body: str  # "*": the request is the JSON body; "": its fields come from the query
    method: MethodDescriptor


def routes(service: ServiceDescriptor) -> Iterator[Route]:
    """The service's unary methods that declare an HTTP rule."""
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        if verb in (None, "custom") or method.client_streaming or method.server_streaming:
            continue
        yield Route(verb.upper(), _compiled(getattr(rule, verb)), rule.body, method)


def _compiled(template: str) -> re.Pattern[str]:
    """`/v1/collections/{collection}:search` as a pattern with one group per field, each
    one path segment (a '{field=**}' multi-segment variable is not used by our protos)."""
    parts, at = [], 0
    for variable in re.finditer(r"\{(\w+)(?:=\*)?\}", template):
        parts += [re.escape(template[at:variable.start()]), f"(?P<{variable[1]}>[^/:]+)"]
        at = variable.end()
    return re.compile("".join([*parts, re.escape(template[at:])]))


class BadRequest(Exception):
    """The HTTP request cannot become the call's message."""


def request_message(route: Route, body: bytes, path: Mapping[str, str],
                    query: Mapping[str, list[str]]) -> Message:
    message = message_factory.GetMessageClass(route.method.input_type)()
    try:
        if route.body == "*" and body.strip():
            json_format.Parse(body, message)
        elif route.body != "*":
            json_format.ParseDict(_query_fields(message, query), message)
    except (json_format.ParseError, UnicodeDecodeError) as err:
        raise BadRequest(f"the request is not a {route.method.input_type.name} in the "
                         f"protobuf JSON mapping: {err}") from err
    for name, value in path.items():  # the path wins over the body, as in grpc-gateway
        setattr(message, name, unquote(value))
    return message


def _query_fields(message: Message, query: Mapping[str, list[str]]) -> dict[str, Any]:
    """Query parameters as the message's top-level scalar fields (by proto or JSON name)."""
    fields = message.DESCRIPTOR.fields_by_name
    by_json = {f.json_name: f for f in message.DESCRIPTOR.fields}
    out: dict[str, Any] = {}
    field: Any
    for key, values in query.items():
        field = fields.get(key) or by_json.get(key)
        if field is None or field.type == FieldDescriptor.TYPE_MESSAGE:
            raise BadRequest(f"{message.DESCRIPTOR.name} has no query parameter {key!r}")
        converted = [_scalar(field, value) for value in values]
        out[field.name] = converted if field.is_repeated else converted[-1]
    return out


def _scalar(field: Any, value: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value.lower() not in ("true", "false"):
            raise BadRequest(f"{field.name} must be true or false; got {value[:40]!r}")
        return value.lower() == "true"
    return value  # the JSON mapping reads numbers and enum names from strings


def error_body(code: grpc.StatusCode, message: str) -> web.Response:
    return web.json_response({"code": code.value[0], "message": message},
                             status=HTTP_STATUS.get(code, 500))


def _too_large() -> web.Response:
    """413, not 429: the same request can never succeed, so it must not invite a retry."""
    response = error_body(grpc.StatusCode.RESOURCE_EXHAUSTED, "the request is larger than the "
                          "message limit: send fewer or smaller images a call")
    response.set_status(413)
    return response


def _dual_stack(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    return sock


def _cross_site(request: web.Request) -> bool:
    """A call a browser makes for a page of another origin (another site, or another port of
    this host). The API sends no CORS headers, so such a page cannot read the answer, but a
    "simple" request (a form, or fetch with text/plain) is still made, and the body is read as
    JSON whatever its type: without this check any page the user visits could delete images
    from a service without tokens (CSRF). Browsers say where a call comes from in
    Sec-Fetch-Site (which a page cannot set) and, older ones, in Origin; curl and other
    clients send neither, and this page's own calls are same-origin (behind a proxy too)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("cross-site", "same-site")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return origin.split("://", 1)[-1].lower() != host.lower()


def _metadata_safe(value: str) -> bool:
    """gRPC metadata values are printable ASCII; anything else fails the call client-side."""
    return value.isascii() and value.isprintable()


class HttpGateway:
    """Serves `service`'s HTTP routes on `host`:`port`, calling the gRPC server at `target`."""

    def __init__(self, service: ServiceDescriptor, target: str, host: str, port: int,
                 max_message_bytes: int, tls: ssl.SSLContext | None = None) -> None:
        self._service = service
        self._routes = list(routes(service))
        self._address = (host, port)
        self._max_bytes = max_message_bytes
        self._tls = tls
        self._channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self._runner: web.AppRunner | None = None
        self._page = {path: ((resources.files("search_service") / "web" / name).read_bytes(),
                             content_type) for path, (name, content_type) in _PAGE_FILES.items()}
        self.port = 0

    async def start(self) -> int:
        app = web.Application(client_max_size=self._max_bytes * 4 // 3 + _BODY_SLACK)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)  # the gRPC access log has each call
        await self._runner.setup()
        host, port = self._address
        bare = host.strip("[]")  # aiohttp takes IPv6 addresses without brackets
        try:
            if bare == "::":
                # Every address of both families, on one port, as gRPC binds "[::]" (asyncio
                # would make "::" IPv6-only, or give each family its own port for port 0).
                await web.SockSite(self._runner, _dual_stack(port),
                                   ssl_context=self._tls).start()
            else:
                await web.TCPSite(self._runner, bare, port, ssl_context=self._tls).start()
        except OSError as err:
            await self._runner.cleanup()
            raise PortUnavailable(f"cannot listen on {host}:{port} for HTTP/JSON "
                                  f"({err.strerror or err}): choose another port") from err
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._channel.close()

    def _match(self, verb: str, path: str) -> tuple[Route, dict[str, str]] | web.Response:
        matched = [(r, m.groupdict()) for r in self._routes if (m := r.path.fullmatch(path))]
        for route, fields in matched:
            if route.verb == verb:
                return route, fields
        if matched:
            allowed = ", ".join(sorted({route.verb for route, _ in matched}))
            response = error_body(grpc.StatusCode.UNIMPLEMENTED,
                                  f"{path} takes {allowed}, not {verb}")
            response.set_status(405)
            response.headers["Allow"] = allowed
            return response
        return error_body(grpc.StatusCode.NOT_FOUND, f"no route {verb} {path[:200]}; the "
                          "routes are the google.api.http options of the protos (docs/api.md)")

    def _page_file(self, path: str) -> web.Response:
        body, content_type = self._page[path]
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers=_PAGE_HEADERS)

    async def _handle(self, request: web.Request) -> web.Response:
        where = request.raw_path.split("?", 1)[0]
        if where in self._page and request.method in ("GET", "HEAD"):
            return self._page_file(where)
        found = self._match(request.method, where)
        if isinstance(found, web.Response):
            return found
        if _cross_site(request):
            return error_body(grpc.StatusCode.PERMISSION_DENIED, "a call from a page of another "
                              "origin is refused: the API serves no cross-origin callers")
        route, path = found
        try:
            body = await request.read()
            message = request_message(route, body, path, {
                key: request.query.getall(key) for key in request.query})
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
        except BadRequest as err:
            return error_body(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if message.ByteSize() > self._max_bytes:
            return _too_large()
        authorization = request.headers.get("Authorization")
        if authorization is not None and not _metadata_safe(authorization):
            return error_body(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        return await self._call(route, message, authorization)

    async def _call(self, route: Route, message: Message, authorization: str | None
                    ) -> web.Response:
        call = self._channel.unary_unary(
            f"/{self._service.full_name}/{route.method.name}",
            request_serializer=type(message).SerializeToString,
            response_deserializer=message_factory.GetMessageClass(
                route.method.output_type).FromString)
        metadata = (("authorization", authorization),) if authorization else None
        try:
            response = await call(message, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            return error_body(err.code(), err.details() or "")
        return web.Response(text=json.dumps(json_format.MessageToDict(
            response, always_print_fields_with_no_presence=True)),
            content_type="application/json")
