"""Method handlers built from a service descriptor, with request decoding that cannot crash.

grpcio answers a request it cannot deserialise (for example a string field holding invalid
UTF-8, which some languages' protobuf libraries send without complaint) with a bare INTERNAL.
Our deserialiser instead returns a `MalformedRequest`, which the error interceptor turns into
INVALID_ARGUMENT with a message the caller can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass


class MalformedRequest:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, message_name: str, error: str) -> None:
        self.message_name = message_name
        self.error = error

    def describe(self) -> str:
        return (f"request is not a valid {self.message_name} ({self.error}); "
                "string fields must hold valid UTF-8")


def _deserializer(message_class: type[Message]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as err:
            return MalformedRequest(message_class.DESCRIPTOR.full_name, str(err) or "parse error")
    return deserialize


_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def generic_handler(service: ServiceDescriptor, servicer: object) -> grpc.GenericRpcHandler:
    """Routes every method of `service` to the servicer method of the same name."""
    handlers = {}
    for method in service.methods:
        factory: Any = _FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=_deserializer(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
