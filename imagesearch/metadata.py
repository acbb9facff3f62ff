"""Typed metadata values <-> imagesearch.search.v1.MetadataValue, for clients and the server."""

from __future__ import annotations

from typing import Any

from imagesearch.search.v1 import search_pb2 as pb

Scalar = str | int | float | bool


def to_value(value: Any) -> pb.MetadataValue:
    # bool before int: in Python, True is an int.
    if isinstance(value, bool):
        return pb.MetadataValue(bool_value=value)
    if isinstance(value, int):
        return pb.MetadataValue(int_value=value)
    if isinstance(value, float):
        return pb.MetadataValue(double_value=value)
    return pb.MetadataValue(string_value=str(value))


def from_value(value: pb.MetadataValue) -> Scalar | None:
    """The value, or None when no kind is set."""
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)
