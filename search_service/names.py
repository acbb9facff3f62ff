"""Validation of the names callers choose: collection names, external ids, metadata keys.

Names end up inside Milvus primary keys and filter expressions, so the allowed characters are
strict and checked before anything reaches Milvus.
"""

from __future__ import annotations

import re
import unicodedata

from search_service.errors import InvalidName

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# External ids are the caller's own keys (file names, UUIDs, URLs): any text but '/' (it
# separates collection and id in the primary key) and control characters - C0, DEL and C1
# (U+0085 NEXT LINE, U+009B CSI...), the line and paragraph separators, and lone surrogates -
# which break log lines, terminals and the CSV or JSON a customer exports them to.
MAX_EXTERNAL_ID = 256
_CONTROL = {"Cc", "Zl", "Zp", "Cs"}
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.fullmatch(name):
        raise InvalidName(
            f"collection name {name[:80]!r} is invalid: use 1-63 characters from a-z, 0-9, "
            "'_' and '-', starting with a letter or digit")
    return name


def check_external_id(external_id: str) -> str:
    if (not 1 <= len(external_id) <= MAX_EXTERNAL_ID or "/" in external_id
            or any(unicodedata.category(c) in _CONTROL for c in external_id)):
        raise InvalidName(
            f"external id {external_id[:80]!r} is invalid: use 1-256 characters, no '/' and no "
            "control characters")
    return external_id


def check_metadata_key(key: str) -> str:
    if not METADATA_KEY.fullmatch(key):
        raise InvalidName(
            f"metadata key {key[:80]!r} is invalid: use 1-64 characters from A-Z, a-z, 0-9 and "
            "'_', not starting with a digit")
    return key
