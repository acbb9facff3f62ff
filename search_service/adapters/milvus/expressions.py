"""Milvus boolean expressions, built from validated names and structured conditions.

Callers never send expression text. Keys are validated names (search_service.validation);
every value is rendered as a literal with quotes and backslashes escaped and control
characters refused (as both Milvus Lite's and the server's parsers read them), and every
expression is AND-ed with the caller's own collection key (also where a query runs in the
collection's own partition, see layout.py), so no condition can reach another collection's
rows or change the expression's structure. Ids are never handed to pymilvus' `ids=`
arguments, which paste them into `pk in [...]` unescaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from search_service.domain import Condition, Op, Scalar
from search_service.errors import InvalidFilter
from search_service.validation import check_conditions, check_filter_value, check_metadata_key

METADATA_FIELD = "metadata"
COLLECTION_FIELD = "collection"


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
    check_filter_value(value)
    return json.dumps(value, ensure_ascii=False)


def _condition(condition: Condition) -> str:
    field = f"{METADATA_FIELD}[{json.dumps(check_metadata_key(condition.key))}]"
    values = condition.values
    if condition.op is Op.EXISTS:
        return f"exists {field}"
    # Written out as equalities: Milvus Lite's parser takes `in` on fields, not JSON paths.
    if condition.op is Op.IN:
        return " or ".join(f"{field} == {literal(v)}" for v in values)
    if condition.op is Op.NOT_IN:
        return " and ".join(f"{field} != {literal(v)}" for v in values)
    return f"{field} {condition.op.value} {literal(values[0])}"


def compile_filter(collection_key: str, conditions: Sequence[Condition] = ()) -> str:
    """The expression selecting a collection's rows that satisfy every condition."""
    parts = [f"{COLLECTION_FIELD} == {literal(collection_key)}"]
    parts += [f"({_condition(c)})" for c in check_conditions(conditions)]
    return " and ".join(parts)


def rows_filter(collection_key: str, pks: Sequence[str]) -> str:
    """The expression selecting the rows with these primary keys, in that collection only."""
    listed = ", ".join(literal(pk) for pk in pks)
    return f"{compile_filter(collection_key)} and pk in [{listed}]"
