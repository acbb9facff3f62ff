"""Structured metadata filters, compiled to Milvus boolean expressions.

Callers never send expression text. They send conditions (key, operator, typed values); keys are
validated names, values are rendered as literals with every quote and backslash escaped and
control characters refused, and the result is always AND-ed with the caller's own collection.
So no condition can reach another collection's rows or change the expression's structure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum

from search_service.errors import InvalidFilter
from search_service.names import check_metadata_key

Scalar = str | int | float | bool
MAX_CONDITIONS = 32
MAX_VALUES = 256
METADATA_FIELD = "metadata"
COLLECTION_FIELD = "collection"


class Op(Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LTE = "<="
    GT = ">"
    GTE = ">="
    IN = "in"
    NOT_IN = "not in"
    EXISTS = "exists"


@dataclass(frozen=True)
class Condition:
    key: str
    op: Op
    values: tuple[Scalar, ...] = ()


def literal(value: Scalar) -> str:
    """A Milvus literal for `value`; strings are double-quoted with \\ and " escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter("filter values must be finite numbers")
        return repr(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidFilter("filter strings must not contain control characters")
    return json.dumps(value, ensure_ascii=False)


def _condition(condition: Condition) -> str:
    field = f"{METADATA_FIELD}[{json.dumps(check_metadata_key(condition.key))}]"
    values = condition.values
    if condition.op is Op.EXISTS:
        if values:
            raise InvalidFilter(f"condition on {condition.key!r}: 'exists' takes no value")
        return f"exists {field}"
    if condition.op in (Op.IN, Op.NOT_IN):
        if not values or len(values) > MAX_VALUES:
            raise InvalidFilter(f"condition on {condition.key!r}: give 1 to {MAX_VALUES} values")
        # Written out as equalities: Milvus Lite's parser takes `in` on fields, not JSON paths.
        if condition.op is Op.IN:
            return " or ".join(f"{field} == {literal(v)}" for v in values)
        return " and ".join(f"{field} != {literal(v)}" for v in values)
    if len(values) != 1:
        raise InvalidFilter(f"condition on {condition.key!r}: give exactly one value")
    if condition.op not in (Op.EQ, Op.NE) and isinstance(values[0], (str, bool)):
        raise InvalidFilter(f"condition on {condition.key!r}: ranges compare numbers only")
    return f"{field} {condition.op.value} {literal(values[0])}"


def compile_filter(collection: str, conditions: tuple[Condition, ...] = ()) -> str:
    """The expression selecting `collection`'s rows that satisfy every condition."""
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidFilter(f"at most {MAX_CONDITIONS} conditions per filter")
    parts = [f"{COLLECTION_FIELD} == {literal(collection)}"]
    parts += [f"({_condition(c)})" for c in conditions]
    return " and ".join(parts)
