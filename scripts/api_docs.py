"""Writes the API reference (Markdown) for every proto under protos/ to stdout.

    python scripts/api_docs.py > docs/api.md      (make docs; CI fails when it is stale)

The text is the protos' own comments, so the reference and the API cannot drift apart: units,
ranges and error codes are documented where the fields and RPCs are declared.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc_tools
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
# The error model and the generator note: Markdown too wide for Python source.
HEADER = ROOT / "docs" / "api-header.md"


def descriptors() -> descriptor_pb2.FileDescriptorSet:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        status = protoc.main(["protoc", f"-I{PROTOS}", f"-I{well_known}", "--include_source_info",
                              f"--descriptor_set_out={out}", *files])
        if status != 0:
            sys.exit(f"protoc failed with {status}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {tuple(loc.path): " ".join(line.strip() for line in
                                      loc.leading_comments.strip().splitlines())
            for loc in proto.source_code_info.location if loc.leading_comments}


def render(proto: descriptor_pb2.FileDescriptorProto) -> Iterator[str]:
    notes = comments(proto)
    yield f"## `{proto.package}` ({proto.name})\n"
    for s_index, service in enumerate(proto.service):
        yield f"### service {service.name}\n"
        yield ("| RPC | HTTP/JSON | request | response | description |\n"
               "| --- | --- | --- | --- | --- |")
        for m_index, method in enumerate(service.method):
            request = ("stream " if method.client_streaming else "") + short(method.input_type)
            response = ("stream " if method.server_streaming else "") + short(method.output_type)
            note = notes.get((6, s_index, 2, m_index), "")
            yield (f"| `{method.name}` | {http_route(method)} | {request} | {response} | "
                   f"{cell(note)} |")
        yield ""
    for m_index, message in enumerate(proto.message_type):
        yield from render_message(message, (4, m_index), notes)
    for e_index, enum in enumerate(proto.enum_type):
        yield from render_enum(enum, (5, e_index), notes)


def render_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...],
                   notes: dict[tuple[int, ...], str]) -> Iterator[str]:
    yield f"### {message.name}\n"
    if note := notes.get(path):
        yield note + "\n"
    if message.field:
        yield "| field | type | description |\n| --- | --- | --- |"
        for f_index, field in enumerate(message.field):
            oneof = ""
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneof = f" (one of `{message.oneof_decl[field.oneof_index].name}`)"
            note = notes.get((*path, 2, f_index), "")
            yield f"| `{field.name}` | {field_type(field, message)} | {cell(note)}{oneof} |"
        yield ""
    for e_index, enum in enumerate(message.enum_type):
        yield from render_enum(enum, (*path, 4, e_index), notes)


def render_enum(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...],
                notes: dict[tuple[int, ...], str]) -> Iterator[str]:
    yield f"### enum {enum.name}\n"
    if note := notes.get(path):
        yield note + "\n"
    yield "| value | number | description |\n| --- | --- | --- |"
    for v_index, value in enumerate(enum.value):
        yield f"| `{value.name}` | {value.number} | {cell(notes.get((*path, 2, v_index), ''))} |"
    yield ""


FieldType = descriptor_pb2.FieldDescriptorProto


def field_type(field: FieldType, message: descriptor_pb2.DescriptorProto) -> str:
    if field.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_ENUM):
        name = short(field.type_name)
        entry = next((n for n in message.nested_type
                      if n.name == name and n.options.map_entry), None)
        if entry is not None:
            return f"map<{field_type(entry.field[0], entry)}, {field_type(entry.field[1], entry)}>"
    else:
        name = FieldType.Type.Name(field.type).removeprefix("TYPE_").lower()
    if field.label == FieldType.LABEL_REPEATED and not name.startswith("map<"):
        return f"repeated {name}"
    return ("optional " if field.proto3_optional else "") + name


def http_route(method: descriptor_pb2.MethodDescriptorProto) -> str:
    """The method's google.api.http route, e.g. `POST /v1/collections`; "-" for none."""
    rule = method.options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return f"`{verb.upper()} {getattr(rule, verb)}`" if verb else "-"


def short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def main() -> None:
    parts = [HEADER.read_text()]
    for proto in descriptors().file:
        if proto.package.startswith("imagesearch."):
            parts.append("\n".join(render(proto)))
    sys.stdout.write("\n".join(parts))


if __name__ == "__main__":
    main()
