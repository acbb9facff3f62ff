"""The search service's vocabulary: collections, images, queries, hits and item outcomes.

Plain values, shared by the core, the ports and every adapter and transport. Nothing here
knows Milvus, gRPC or protobuf.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ModelSpace:
    """The vector space a collection lives in: the embedding model that made its vectors."""

    fingerprint: str
    dimension: int
    model_name: str


@dataclass(frozen=True)
class ServedModel:
    """A model the embedder serves, as the search service offers it for collections."""

    space: ModelSpace
    is_default: bool
    ready: bool
    image_size: int
    languages: tuple[str, ...]


class MigrationState(enum.Enum):
    COPYING = "copying"
    PAUSED = "paused"
    COPIED = "copied"
    SWITCHED = "switched"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


# Before the switch: the collection uses the source; writes land in the target too.
BEFORE_SWITCH = frozenset({MigrationState.COPYING, MigrationState.PAUSED,
                           MigrationState.COPIED, MigrationState.FAILED})
# States in which a write lands in two spaces.
DUAL_WRITES = BEFORE_SWITCH | {MigrationState.SWITCHED}


@dataclass(frozen=True)
class Migration:
    """A collection's move to another model (search_service.migration), kept in its record.

    `source` is the space the collection was built with, `target` the one it moves to; the
    collection's `model` is the source before the switch and the target after it."""

    source: ModelSpace
    target: ModelSpace
    state: MigrationState
    created_at_ms: int
    updated_at_ms: int
    switch_when_copied: bool = True
    grace_period_s: int = 86_400
    force: bool = False
    # The last image id the background copy has embedded into the target ("" before any).
    cursor: str = ""
    copied: int = 0
    total: int = 0
    skipped: int = 0
    skipped_ids: tuple[str, ...] = ()
    switched_at_ms: int = 0
    error: str = ""
    # Which worker copies, and until when its claim holds (another replica may take over
    # after it, as after a restart).
    worker: str = ""
    lease_until_ms: int = 0

    @property
    def grace_ends_at_ms(self) -> int:
        return self.switched_at_ms + 1000 * self.grace_period_s if self.switched_at_ms else 0


@dataclass(frozen=True)
class CollectionRecord:
    name: str
    model: ModelSpace
    description: str
    created_at_ms: int
    # What the collection's rows carry, made afresh at each creation (so a collection created
    # again under a deleted one's name never sees its rows); the name for older collections.
    key: str = ""
    # The collection's migration to another model: under way, in its grace period, or the
    # last one ended; None if it never had one.
    migration: Migration | None = None

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)

    @property
    def shadow(self) -> CollectionRecord | None:
        """Where the collection's writes land besides its own space during a migration: the
        target's space before the switch, the source's in the grace period after it."""
        migration = self.migration
        if migration is None or migration.state not in DUAL_WRITES:
            return None
        other = (migration.source if migration.state is MigrationState.SWITCHED
                 else migration.target)
        return CollectionRecord(self.name, other, self.description, self.created_at_ms,
                                self.key)


@dataclass(frozen=True)
class Collection:
    record: CollectionRecord
    image_count: int
    adaptation: Adaptation | None = None  # read for GetCollection only


@dataclass(frozen=True)
class NewImage:
    id: str
    data: bytes
    # None: a value the caller sent with no kind set, refused for this image alone.
    metadata: dict[str, Scalar | None]


@dataclass(frozen=True)
class Kept:
    """What the embedder made of an image beside its vector, to keep in the image store:
    its encoded copy signal (imagesearch.copies) and a JPEG thumbnail, each None where none
    was made (the item failed, or the embedder is older than them)."""

    copy_signal: bytes | None = None
    thumbnail: bytes | None = None
    # A normalised copy of the pixels (a JPEG), to embed the image again with another model.
    pixels: bytes | None = None


@dataclass(frozen=True)
class StoredImage:
    external_id: str
    metadata: dict[str, Any]
    vector: np.ndarray | None = None
    # When the row was last written (ms since the epoch; 0 where a store does not say).
    updated_at_ms: int = 0


class DuplicateMode(enum.Enum):
    COPIES = "copies"  # verified copies of the same picture
    SIMILAR = "similar"  # embedding similarity over a threshold


class MatchKind(enum.Enum):
    EXACT = "exact"  # the same bytes
    COPY = "copy"  # an edited copy, verified
    SIMILAR = "similar"  # alike by embedding, nothing verified


@dataclass(frozen=True)
class CopyEvidence:
    hash_distance: int
    mirrored: bool
    inliers: int
    correlation: float


@dataclass(frozen=True)
class Hit:
    external_id: str
    similarity: float
    metadata: dict[str, Any]
    # Duplicates only.
    match: MatchKind | None = None
    evidence: CopyEvidence | None = None


class Problem(enum.Enum):
    """Why an item, a query or a call was refused. The values are the gRPC status names, but
    only the transports map them to codes."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class Outcome:
    """One item's outcome in a batch (an image added, a query answered, a text embedded):
    done when `problem` is None, else refused for that item alone."""

    problem: Problem | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


DONE = Outcome()


def refused(message: str, problem: Problem = Problem.INVALID_ARGUMENT) -> Outcome:
    return Outcome(problem, message)


# An embedded item: its unit vector, or why it has none.
Embedding = np.ndarray | Outcome


class Op(enum.Enum):
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
    """A metadata condition: `key op values`; many are AND-ed. Never expression text."""

    key: str
    op: Op
    values: tuple[Scalar, ...] = ()


@dataclass(frozen=True)
class Query:
    """Exactly one of text, image, image_id, vector and parts is set. Parts make a compound
    query (their weighted sum); feedback refines a Search query (search_service.compose)."""

    text: str | None = None
    image: bytes | None = None
    image_id: str | None = None
    vector: np.ndarray | None = None
    parts: tuple[Part, ...] | None = None
    feedback: Feedback | None = None
    language: str = ""  # of `text`: a BCP 47 tag, "auto", or "" for the default tower
    skip_adaptation: bool = False  # its texts are not mapped by the collection's adaptation

    @property
    def own_ids(self) -> frozenset[str]:
        """The indexed images this query is made of (its image_id, or its image_id parts):
        what duplicates and classification leave out of its answer."""
        if self.parts is None:
            return frozenset({self.image_id}) if self.image_id is not None else frozenset()
        return frozenset(p.query.image_id for p in self.parts if p.query.image_id is not None)


@dataclass(frozen=True)
class Part:
    """One term of a compound query: a query of one kind (no parts, no feedback) and its
    weight."""

    query: Query
    weight: float = 1.0


@dataclass(frozen=True)
class Feedback:
    """Relevance feedback on a query (Rocchio); None weights take the defaults."""

    positive_ids: tuple[str, ...] = ()
    negative_ids: tuple[str, ...] = ()
    query_weight: float | None = None
    positive_weight: float | None = None
    negative_weight: float | None = None
    exclude_positives: bool = False
    include_negatives: bool = False

    @property
    def excluded(self) -> frozenset[str]:
        """The examples left out of the hits."""
        return frozenset((self.positive_ids if self.exclude_positives else ())
                         + (() if self.include_negatives else self.negative_ids))


@dataclass(frozen=True)
class FeedbackRecord:
    """One recorded relevance judgement (search_service.feedback)."""

    id: str
    image_id: str
    relevant: bool
    query_kind: str
    query_description: str
    recorded_at_ms: int
    query_vector: np.ndarray | None = None


@dataclass(frozen=True)
class QueryResult:
    hits: list[Hit]
    outcome: Outcome = DONE
    text_towers: tuple[str, ...] = ()  # the embedder's towers that embedded its texts


@dataclass(frozen=True)
class DuplicateGroup:
    ids: list[str]
    min_similarity: float


@dataclass(frozen=True)
class Duplicates:
    hits: list[Hit]
    mode: DuplicateMode
    unverified: int = 0  # candidates without a copy signal (COPIES)


@dataclass(frozen=True)
class DuplicateGroups:
    groups: list[DuplicateGroup]
    scanned: int
    mode: DuplicateMode
    unverified: int = 0  # images without a copy signal (COPIES)


class ClassSource(enum.Enum):
    """What Classify's labels come from."""

    LABELLED = "labelled"  # a vote of the nearest labelled images (k-NN)
    NAMES = "names"  # the nearest of the collection's class names (zero-shot)
    BOTH = "both"  # the two mixed (Tip-Adapter's idea: the names' prior, the images' cache)


@dataclass(frozen=True)
class LabelScore:
    label: str
    confidence: float
    votes: int


@dataclass(frozen=True)
class Classification:
    labels: list[LabelScore]
    outcome: Outcome = field(default_factory=Outcome)


@dataclass(frozen=True)
class ModelEvaluation:
    """How well a served model retrieves a collection's labelled images (search_service.
    evaluation): leave-one-out shares, each in [0, 1]."""

    space: ModelSpace
    is_current: bool
    images: int
    recall_at_1: float
    recall_at_10: float
    knn_accuracy: float
    zero_shot_accuracy: float


@dataclass(frozen=True)
class ModelEvaluations:
    evaluations: list[ModelEvaluation]
    labels: int
    images_without_pixels: int


class FitState(enum.Enum):
    """Where a collection's adaptation fit stands, as this instance knows it."""

    NONE = "none"  # no fit here since the service started (a fitted map may still be kept)
    FITTING = "fitting"  # a fit runs in the background
    DONE = "done"  # the last fit here finished; its map is kept
    FAILED = "failed"  # the last fit here failed; the map before it (if any) is kept


@dataclass(frozen=True)
class Adaptation:
    """A collection's query adaptation (search_service.adaptation): the kept map, if any, and
    the fit in progress. version 0: no map is kept."""

    version: int = 0
    enabled: bool = False
    queries: int = 0  # judged queries the map was fit on
    judgements: int = 0  # judgements of those queries
    fitted_ms: int = 0  # when the map was fit (Unix ms)
    held_out: int = 0  # queries held out of the fit that the figures below are measured on
    held_out_before: float = 0.0  # their precision at 1 among judged images, without the map
    held_out_after: float = 0.0  # ... and with it
    state: FitState = FitState.NONE
    fit_error: str = ""  # why the last fit failed (FAILED)
