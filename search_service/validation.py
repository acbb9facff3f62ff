"""Every check of what a caller sends, in one place, before any work is done.

Names end up in Milvus primary keys and expressions, and ids in the caller's own exports, so
the allowed characters are strict. Each check raises InvalidArgument (or a subclass) with a
message that says what was wrong and how to fix it.
"""

from __future__ import annotations

import base64
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

from imagesearch.errors import InvalidArgument
from search_service.domain import Condition, Op, Scalar
from search_service.errors import InvalidFilter, InvalidName

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# External ids are the caller's own keys (file names, UUIDs, URLs): any text but '/' (it
# separates collection and id in the primary key) and control characters - C0, DEL and C1
# (U+0085 NEXT LINE, U+009B CSI...), the line and paragraph separators, and lone surrogates -
# which break log lines, terminals and the CSV or JSON a customer exports them to.
MAX_EXTERNAL_ID = 256
_CONTROL = {"Cc", "Zl", "Zp", "Cs"}

MAX_BATCH = 256
MAX_IDS = 1000
MAX_QUERIES = 64
MAX_TOP_K = 1000
MAX_METADATA_ENTRIES = 64
MAX_METADATA_STRING = 4096
# Per image, as JSON: a page of 1000 images (or 1000 hits) stays far below message limits.
MAX_METADATA_BYTES = 16 * 1024
MAX_DESCRIPTION = 1024
MAX_CONDITIONS = 32
MAX_VALUES = 256
MAX_PAGE = 1000
# Compound queries and relevance feedback (search_service.compose).
MAX_PARTS = 16
MAX_PART_WEIGHT = 100.0
MAX_EXAMPLES = 64
MAX_FEEDBACK_WEIGHT = 10.0
# Class names (zero-shot Classify): per call, per name, and per collection.
MAX_CLASS_NAMES_PER_CALL = 1000
MAX_CLASS_NAME = 200
MAX_CLASS_NAMES = 100_000
# Relevance judgements kept per collection (RecordFeedback), and ids per call.
MAX_FEEDBACK = 100_000
MAX_JUDGEMENTS = 1000
# A feedback id: the judged image's id, '/', 32 hex digits (search_service.feedback_space).
MAX_FEEDBACK_ID = MAX_EXTERNAL_ID + 33
# A feedback row's id is kept where an image's id is (1024 UTF-8 bytes in Milvus, with 33 more
# for the '/' and digest): an image whose id is wider than this cannot be judged.
MAX_JUDGED_ID_BYTES = 1024 - 33


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.fullmatch(name):
        raise InvalidName(
            f"collection name {name[:80]!r} is invalid: use 1-63 characters from a-z, 0-9, "
            "'_' and '-', starting with a letter or digit")
    return name


# A model's name or fingerprint ("sha256:" and 64 hex digits), as the embedder lists them.
MAX_MODEL_NAME = 256
# The longest grace period a migration keeps the old model's vectors for.
MAX_GRACE_PERIOD_S = 30 * 86_400


def check_model_name(name: str) -> str:
    """A served model's name or fingerprint ("" the primary)."""
    if (len(name) > MAX_MODEL_NAME
            or any(unicodedata.category(c) in _CONTROL for c in name)):
        raise InvalidArgument(f"model {name[:80]!r} is invalid: name a served model by its "
                              "name or fingerprint (ListModels), at most 256 characters")
    return name


def check_grace_period(seconds: int) -> int:
    if not 0 <= seconds <= MAX_GRACE_PERIOD_S:
        raise InvalidArgument(f"grace_period_seconds {seconds} is out of range: 0 to "
                              f"{MAX_GRACE_PERIOD_S} (30 days)")
    return seconds


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


def check_count(kind: str, count: int, most: int) -> None:
    if count == 0:
        raise InvalidArgument(f"request has no {kind}; send 1 to {most}")
    if count > most:
        raise InvalidArgument(f"request has {count} {kind}; the limit is {most}")


def check_ids(ids: Sequence[str]) -> list[str]:
    check_count("ids", len(ids), MAX_IDS)
    return [check_external_id(i) for i in ids]


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION} characters")
    return description


def check_metadata(metadata: Mapping[str, Scalar | None]) -> dict[str, Scalar]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(f"metadata has {len(metadata)} entries; at most "
                              f"{MAX_METADATA_ENTRIES}")
    checked: dict[str, Scalar] = {}
    for key, value in metadata.items():
        check_metadata_key(key)
        if value is None:
            raise InvalidArgument(f"metadata {key!r} has no value: set one of string_value, "
                                  "int_value, double_value or bool_value")
        if isinstance(value, str) and len(value) > MAX_METADATA_STRING:
            raise InvalidArgument(f"metadata {key!r} is longer than {MAX_METADATA_STRING} "
                                  "characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"metadata {key!r} is {value}; numbers must be finite")
        checked[key] = value
    size = len(json.dumps(checked, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} "
                              "per image")
    return checked


def check_similarity(value: float) -> float:
    if not -1.0 <= value <= 1.0:  # NaN fails too
        raise InvalidArgument(f"min_similarity must be in [-1, 1]; got {value}")
    return value


def check_top_k(top_k: int) -> int:
    """0 means 10."""
    if not 0 <= top_k <= MAX_TOP_K:
        raise InvalidArgument(f"top_k must be 0 to {MAX_TOP_K}; got {top_k}")
    return top_k or 10


def check_bounded(name: str, value: int, low: int, high: int, default: int) -> int:
    """A limit where 0 means the default."""
    if value and not low <= value <= high:
        raise InvalidArgument(f"{name} must be {low} to {high}; got {value}")
    return value or default


def check_part_weight(weight: float) -> float:
    if not (math.isfinite(weight) and weight != 0 and abs(weight) <= MAX_PART_WEIGHT):
        raise InvalidArgument(f"weight {weight} is invalid: give a non-zero number in "
                              f"[-{MAX_PART_WEIGHT:g}, {MAX_PART_WEIGHT:g}]")
    return weight


def check_feedback_weight(name: str, weight: float | None, default: float) -> float:
    """A Rocchio coefficient; None means the default."""
    if weight is None:
        return default
    if not 0 <= weight <= MAX_FEEDBACK_WEIGHT:  # NaN fails too
        raise InvalidArgument(f"feedback {name} must be in [0, {MAX_FEEDBACK_WEIGHT:g}]; got "
                              f"{weight}")
    return weight


def check_examples(positive: Sequence[str], negative: Sequence[str]) -> None:
    """Feedback examples: at most MAX_EXAMPLES a side, valid ids, none on both sides."""
    for side, ids in (("positive", positive), ("negative", negative)):
        if len(ids) > MAX_EXAMPLES:
            raise InvalidArgument(f"feedback has {len(ids)} {side} examples; the limit is "
                                  f"{MAX_EXAMPLES}")
        for external_id in ids:
            check_external_id(external_id)
    both = sorted(set(positive) & set(negative))
    if both:
        raise InvalidArgument(f"feedback gives {', '.join(repr(i[:80]) for i in both[:5])} "
                              "both as a positive and as a negative example")


def check_class_names(names: Sequence[str]) -> list[str]:
    """1 to MAX_CLASS_NAMES_PER_CALL distinct names, each 1 to MAX_CLASS_NAME characters of
    printable text with no space at either end (a name is the label Classify answers with, so
    "cat" and "cat " must not become two classes); returned in Unicode NFC."""
    check_count("class names", len(names), MAX_CLASS_NAMES_PER_CALL)
    for position, name in enumerate(names):
        if not 1 <= len(name) <= MAX_CLASS_NAME:
            raise InvalidArgument(f"class name {position} must be 1 to {MAX_CLASS_NAME} "
                                  f"characters; got {len(name)}")
        if name != name.strip() or not name.isprintable() or not _encodable(name):
            raise InvalidArgument(f"class name {position} ({name[:40]!r}) must be printable "
                                  "text with no space at either end")
    # NFC: "café" typed precomposed or with a combining accent is one label, one class.
    normalised = [unicodedata.normalize("NFC", name) for name in names]
    if len(set(normalised)) != len(normalised):
        raise InvalidArgument("class names must be distinct (also once Unicode-normalised, "
                              "NFC)")
    return normalised


def check_judgements(relevant: Sequence[str], not_relevant: Sequence[str]) -> list[str]:
    """1 to MAX_JUDGEMENTS valid image ids in all, none twice (so none on both sides): one
    image has one judgement per query. Returns them, relevant first."""
    judged = [*relevant, *not_relevant]
    check_count("judged image ids", len(judged), MAX_JUDGEMENTS)
    for external_id in judged:
        check_external_id(external_id)
        if len(external_id.encode("utf-8")) > MAX_JUDGED_ID_BYTES:
            raise InvalidArgument(
                f"image id {external_id[:80]!r} is too long to be judged: feedback is kept "
                f"for ids of at most {MAX_JUDGED_ID_BYTES} UTF-8 bytes; got "
                f"{len(external_id.encode('utf-8'))}")
    twice = sorted(i for i, n in Counter(judged).items() if n > 1)
    if twice:
        raise InvalidArgument(f"images {', '.join(repr(i[:80]) for i in twice[:5])} are judged "
                              "more than once: give each image once, relevant or not")
    return judged


def check_feedback_ids(ids: Sequence[str]) -> list[str]:
    check_count("feedback ids", len(ids), MAX_JUDGEMENTS)
    for feedback_id in ids:
        image_id, slash, digest = feedback_id.rpartition("/")
        if not slash or len(digest) != 32 or not feedback_id.isprintable():
            raise InvalidArgument(f"feedback id {feedback_id[:80]!r} is invalid: pass a "
                                  "FeedbackRecord.id unchanged")
        check_external_id(image_id)
    return list(ids)


def check_names_weight(weight: float | None, default: float) -> float:
    """The share of the class names' scores in a mix with the labelled images' vote."""
    if weight is None:
        return default
    if not 0 <= weight <= 1:  # NaN fails too
        raise InvalidArgument(f"names_weight must be in [0, 1]; got {weight}")
    return weight


def check_filter_value(value: Scalar) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilter("filter values must be finite numbers")
    if isinstance(value, str) and (any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
                                   or not _encodable(value)):
        raise InvalidFilter("filter strings must be valid text without control characters")
    return value


def check_conditions(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    """Conditions that any store can evaluate: valid keys, the right number of values for
    their operator, ranges on numbers only."""
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidFilter(f"at most {MAX_CONDITIONS} conditions per filter")
    for condition in conditions:
        _check_condition(condition)
    return tuple(conditions)


def _check_condition(condition: Condition) -> None:
    check_metadata_key(condition.key)
    values, name = condition.values, condition.key
    for value in values:
        check_filter_value(value)
    if condition.op is Op.EXISTS:
        if values:
            raise InvalidFilter(f"condition on {name!r}: 'exists' takes no value")
    elif condition.op in (Op.IN, Op.NOT_IN):
        if not values or len(values) > MAX_VALUES:
            raise InvalidFilter(f"condition on {name!r}: give 1 to {MAX_VALUES} values")
    elif len(values) != 1:
        raise InvalidFilter(f"condition on {name!r}: give exactly one value")
    elif condition.op not in (Op.EQ, Op.NE) and isinstance(values[0], (str, bool)):
        raise InvalidFilter(f"condition on {name!r}: ranges compare numbers only")


def page_size(requested: int, default: int = 100, most: int = MAX_PAGE) -> int:
    if requested < 0 or requested > most:
        raise InvalidArgument(f"page_size must be 0 to {most}; got {requested}")
    return requested or default


def encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token is invalid; pass next_page_token unchanged") from None
    if (not isinstance(after, str) or not _encodable(after)
            or any(unicodedata.category(c) == "Cc" for c in after)):
        raise InvalidArgument("page_token is invalid; pass next_page_token unchanged")
    return after


def _encodable(text: str) -> bool:
    """Valid Unicode text (no lone surrogates, which JSON and Python strings allow and UTF-8,
    protobuf and Milvus do not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,7}")


def check_language(language: str) -> str:
    """A BCP 47 tag's shape (the embedder says whether it serves it), or "auto"."""
    if language == "auto" or (len(language) <= 35 and _LANGUAGE.fullmatch(language)):
        return language
    raise InvalidArgument(f"language {language[:40]!r} is not a BCP 47 tag (e.g. \"de\", "
                          "\"zh-Hans\") or \"auto\"")
