"""How callers reach the search core: gRPC today (an HTTP/JSON face would sit beside it),
with the protobuf <-> domain conversion and the access checks of scoped tokens."""
