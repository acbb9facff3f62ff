import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Operator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_UNSPECIFIED: _ClassVar[Operator]
    OPERATOR_EQUAL: _ClassVar[Operator]
    OPERATOR_NOT_EQUAL: _ClassVar[Operator]
    OPERATOR_LESS: _ClassVar[Operator]
    OPERATOR_LESS_OR_EQUAL: _ClassVar[Operator]
    OPERATOR_GREATER: _ClassVar[Operator]
    OPERATOR_GREATER_OR_EQUAL: _ClassVar[Operator]
    OPERATOR_IN: _ClassVar[Operator]
    OPERATOR_NOT_IN: _ClassVar[Operator]
    OPERATOR_EXISTS: _ClassVar[Operator]

class Cutoff(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CUTOFF_UNSPECIFIED: _ClassVar[Cutoff]
    CUTOFF_NONE: _ClassVar[Cutoff]
    CUTOFF_LARGEST_GAP: _ClassVar[Cutoff]
    CUTOFF_Z_SCORE: _ClassVar[Cutoff]

class DuplicateMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DUPLICATE_MODE_UNSPECIFIED: _ClassVar[DuplicateMode]
    DUPLICATE_MODE_COPIES: _ClassVar[DuplicateMode]
    DUPLICATE_MODE_SIMILAR: _ClassVar[DuplicateMode]

class MatchKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_KIND_UNSPECIFIED: _ClassVar[MatchKind]
    MATCH_KIND_EXACT: _ClassVar[MatchKind]
    MATCH_KIND_COPY: _ClassVar[MatchKind]
    MATCH_KIND_SIMILAR: _ClassVar[MatchKind]

class ClassSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLASS_SOURCE_UNSPECIFIED: _ClassVar[ClassSource]
    CLASS_SOURCE_LABELLED_IMAGES: _ClassVar[ClassSource]
    CLASS_SOURCE_NAMES: _ClassVar[ClassSource]
    CLASS_SOURCE_BOTH: _ClassVar[ClassSource]

class FitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIT_STATE_UNSPECIFIED: _ClassVar[FitState]
    FIT_STATE_NONE: _ClassVar[FitState]
    FIT_STATE_FITTING: _ClassVar[FitState]
    FIT_STATE_DONE: _ClassVar[FitState]
    FIT_STATE_FAILED: _ClassVar[FitState]
OPERATOR_UNSPECIFIED: Operator
OPERATOR_EQUAL: Operator
OPERATOR_NOT_EQUAL: Operator
OPERATOR_LESS: Operator
OPERATOR_LESS_OR_EQUAL: Operator
OPERATOR_GREATER: Operator
OPERATOR_GREATER_OR_EQUAL: Operator
OPERATOR_IN: Operator
OPERATOR_NOT_IN: Operator
OPERATOR_EXISTS: Operator
CUTOFF_UNSPECIFIED: Cutoff
CUTOFF_NONE: Cutoff
CUTOFF_LARGEST_GAP: Cutoff
CUTOFF_Z_SCORE: Cutoff
DUPLICATE_MODE_UNSPECIFIED: DuplicateMode
DUPLICATE_MODE_COPIES: DuplicateMode
DUPLICATE_MODE_SIMILAR: DuplicateMode
MATCH_KIND_UNSPECIFIED: MatchKind
MATCH_KIND_EXACT: MatchKind
MATCH_KIND_COPY: MatchKind
MATCH_KIND_SIMILAR: MatchKind
CLASS_SOURCE_UNSPECIFIED: ClassSource
CLASS_SOURCE_LABELLED_IMAGES: ClassSource
CLASS_SOURCE_NAMES: ClassSource
CLASS_SOURCE_BOTH: ClassSource
FIT_STATE_UNSPECIFIED: FitState
FIT_STATE_NONE: FitState
FIT_STATE_FITTING: FitState
FIT_STATE_DONE: FitState
FIT_STATE_FAILED: FitState

class MetadataValue(_message.Message):
    __slots__ = ("string_value", "int_value", "double_value", "bool_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    double_value: float
    bool_value: bool
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EmbeddingModel(_message.Message):
    __slots__ = ("name", "fingerprint", "dimension")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    fingerprint: str
    dimension: int
    def __init__(self, name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., dimension: _Optional[int] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "description", "model", "image_count", "create_time", "migration", "adaptation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    ADAPTATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    model: EmbeddingModel
    image_count: int
    create_time: _timestamp_pb2.Timestamp
    migration: Migration
    adaptation: Adaptation
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., model: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., image_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., migration: _Optional[_Union[Migration, _Mapping]] = ..., adaptation: _Optional[_Union[Adaptation, _Mapping]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "description", "model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    model: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NewImage(_message.Message):
    __slots__ = ("id", "data", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    metadata: _containers.MessageMap[str, MetadataValue]
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ...) -> None: ...

class AddImagesRequest(_message.Message):
    __slots__ = ("collection", "images")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    images: _containers.RepeatedCompositeFieldContainer[NewImage]
    def __init__(self, collection: _Optional[str] = ..., images: _Optional[_Iterable[_Union[NewImage, _Mapping]]] = ...) -> None: ...

class AddImagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ItemStatus]
    def __init__(self, results: _Optional[_Iterable[_Union[ItemStatus, _Mapping]]] = ...) -> None: ...

class IngestImagesRequest(_message.Message):
    __slots__ = ("collection", "image")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: NewImage
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[NewImage, _Mapping]] = ...) -> None: ...

class IngestImagesResponse(_message.Message):
    __slots__ = ("id", "index", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    index: int
    status: ItemStatus
    def __init__(self, id: _Optional[str] = ..., index: _Optional[int] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ...) -> None: ...

class StoredImage(_message.Message):
    __slots__ = ("id", "metadata", "vector")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: _containers.MessageMap[str, MetadataValue]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class GetImagesRequest(_message.Message):
    __slots__ = ("collection", "ids", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class GetImagesResponse(_message.Message):
    __slots__ = ("images", "missing_ids")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[StoredImage]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, images: _Optional[_Iterable[_Union[StoredImage, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images", "next_page_token")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[StoredImage]
    next_page_token: str
    def __init__(self, images: _Optional[_Iterable[_Union[StoredImage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteImagesRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteImagesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetThumbnailsRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetThumbnailsResponse(_message.Message):
    __slots__ = ("thumbnails", "missing_ids")
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    thumbnails: _containers.RepeatedCompositeFieldContainer[Thumbnail]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, thumbnails: _Optional[_Iterable[_Union[Thumbnail, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Thumbnail(_message.Message):
    __slots__ = ("id", "jpeg")
    ID_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    id: str
    jpeg: bytes
    def __init__(self, id: _Optional[str] = ..., jpeg: _Optional[bytes] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("key", "operator", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    operator: Operator
    values: _containers.RepeatedCompositeFieldContainer[MetadataValue]
    def __init__(self, key: _Optional[str] = ..., operator: _Optional[_Union[Operator, str]] = ..., values: _Optional[_Iterable[_Union[MetadataValue, _Mapping]]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("text", "image", "image_id", "vector", "compound", "feedback", "language", "skip_adaptation")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    COMPOUND_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SKIP_ADAPTATION_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    image_id: str
    vector: Vector
    compound: CompoundQuery
    feedback: Feedback
    language: str
    skip_adaptation: bool
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., image_id: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., compound: _Optional[_Union[CompoundQuery, _Mapping]] = ..., feedback: _Optional[_Union[Feedback, _Mapping]] = ..., language: _Optional[str] = ..., skip_adaptation: _Optional[bool] = ...) -> None: ...

class CompoundQuery(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedCompositeFieldContainer[QueryPart]
    def __init__(self, parts: _Optional[_Iterable[_Union[QueryPart, _Mapping]]] = ...) -> None: ...

class QueryPart(_message.Message):
    __slots__ = ("text", "image", "image_id", "vector", "weight", "language")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    image_id: str
    vector: Vector
    weight: float
    language: str
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., image_id: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., weight: _Optional[float] = ..., language: _Optional[str] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("positive_ids", "negative_ids", "query_weight", "positive_weight", "negative_weight", "exclude_positives", "include_negatives")
    POSITIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_POSITIVES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    positive_ids: _containers.RepeatedScalarFieldContainer[str]
    negative_ids: _containers.RepeatedScalarFieldContainer[str]
    query_weight: float
    positive_weight: float
    negative_weight: float
    exclude_positives: bool
    include_negatives: bool
    def __init__(self, positive_ids: _Optional[_Iterable[str]] = ..., negative_ids: _Optional[_Iterable[str]] = ..., query_weight: _Optional[float] = ..., positive_weight: _Optional[float] = ..., negative_weight: _Optional[float] = ..., exclude_positives: _Optional[bool] = ..., include_negatives: _Optional[bool] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "top_k", "min_similarity", "filter", "cutoff")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    top_k: int
    min_similarity: float
    filter: _containers.RepeatedCompositeFieldContainer[Condition]
    cutoff: Cutoff
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., top_k: _Optional[int] = ..., min_similarity: _Optional[float] = ..., filter: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., cutoff: _Optional[_Union[Cutoff, str]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "similarity", "metadata", "match", "evidence")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetadataValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetadataValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    similarity: float
    metadata: _containers.MessageMap[str, MetadataValue]
    match: MatchKind
    evidence: CopyEvidence
    def __init__(self, id: _Optional[str] = ..., similarity: _Optional[float] = ..., metadata: _Optional[_Mapping[str, MetadataValue]] = ..., match: _Optional[_Union[MatchKind, str]] = ..., evidence: _Optional[_Union[CopyEvidence, _Mapping]] = ...) -> None: ...

class CopyEvidence(_message.Message):
    __slots__ = ("hash_distance", "mirrored", "inliers", "correlation")
    HASH_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    INLIERS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_FIELD_NUMBER: _ClassVar[int]
    hash_distance: int
    mirrored: bool
    inliers: int
    correlation: float
    def __init__(self, hash_distance: _Optional[int] = ..., mirrored: _Optional[bool] = ..., inliers: _Optional[int] = ..., correlation: _Optional[float] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("hits", "status", "text_towers")
    HITS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOWERS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    status: ItemStatus
    text_towers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ..., text_towers: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ...) -> None: ...

class FindDuplicatesRequest(_message.Message):
    __slots__ = ("collection", "query", "min_similarity", "max_results", "mode")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: Query
    min_similarity: float
    max_results: int
    mode: DuplicateMode
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., min_similarity: _Optional[float] = ..., max_results: _Optional[int] = ..., mode: _Optional[_Union[DuplicateMode, str]] = ...) -> None: ...

class FindDuplicatesResponse(_message.Message):
    __slots__ = ("duplicates", "mode", "unverified")
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UNVERIFIED_FIELD_NUMBER: _ClassVar[int]
    duplicates: _containers.RepeatedCompositeFieldContainer[Hit]
    mode: DuplicateMode
    unverified: int
    def __init__(self, duplicates: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., mode: _Optional[_Union[DuplicateMode, str]] = ..., unverified: _Optional[int] = ...) -> None: ...

class FindDuplicateGroupsRequest(_message.Message):
    __slots__ = ("collection", "min_similarity", "neighbours", "mode")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    min_similarity: float
    neighbours: int
    mode: DuplicateMode
    def __init__(self, collection: _Optional[str] = ..., min_similarity: _Optional[float] = ..., neighbours: _Optional[int] = ..., mode: _Optional[_Union[DuplicateMode, str]] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("ids", "min_similarity")
    IDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    min_similarity: float
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., min_similarity: _Optional[float] = ...) -> None: ...

class FindDuplicateGroupsResponse(_message.Message):
    __slots__ = ("groups", "images_scanned", "mode", "images_unverified")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_SCANNED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_UNVERIFIED_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[DuplicateGroup]
    images_scanned: int
    mode: DuplicateMode
    images_unverified: int
    def __init__(self, groups: _Optional[_Iterable[_Union[DuplicateGroup, _Mapping]]] = ..., images_scanned: _Optional[int] = ..., mode: _Optional[_Union[DuplicateMode, str]] = ..., images_unverified: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("collection", "queries", "label_key", "k", "max_labels", "source", "names_weight")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NAMES_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    label_key: str
    k: int
    max_labels: int
    source: ClassSource
    names_weight: float
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., label_key: _Optional[str] = ..., k: _Optional[int] = ..., max_labels: _Optional[int] = ..., source: _Optional[_Union[ClassSource, str]] = ..., names_weight: _Optional[float] = ...) -> None: ...

class AddClassNamesRequest(_message.Message):
    __slots__ = ("collection", "names")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class AddClassNamesResponse(_message.Message):
    __slots__ = ("class_name_count",)
    CLASS_NAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    class_name_count: int
    def __init__(self, class_name_count: _Optional[int] = ...) -> None: ...

class ListClassNamesRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListClassNamesResponse(_message.Message):
    __slots__ = ("names", "next_page_token")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, names: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteClassNamesRequest(_message.Message):
    __slots__ = ("collection", "names")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteClassNamesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("collection", "query", "relevant_ids", "not_relevant_ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RELEVANT_IDS_FIELD_NUMBER: _ClassVar[int]
    NOT_RELEVANT_IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: Query
    relevant_ids: _containers.RepeatedScalarFieldContainer[str]
    not_relevant_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., relevant_ids: _Optional[_Iterable[str]] = ..., not_relevant_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("feedback_ids", "feedback_count")
    FEEDBACK_IDS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    feedback_ids: _containers.RepeatedScalarFieldContainer[str]
    feedback_count: int
    def __init__(self, feedback_ids: _Optional[_Iterable[str]] = ..., feedback_count: _Optional[int] = ...) -> None: ...

class FeedbackRecord(_message.Message):
    __slots__ = ("id", "image_id", "relevant", "query_kind", "query_description", "query_vector", "record_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RELEVANT_FIELD_NUMBER: _ClassVar[int]
    QUERY_KIND_FIELD_NUMBER: _ClassVar[int]
    QUERY_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    RECORD_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    image_id: str
    relevant: bool
    query_kind: str
    query_description: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    record_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., image_id: _Optional[str] = ..., relevant: _Optional[bool] = ..., query_kind: _Optional[str] = ..., query_description: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., record_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListFeedbackRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ListFeedbackResponse(_message.Message):
    __slots__ = ("feedback", "next_page_token")
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    feedback: _containers.RepeatedCompositeFieldContainer[FeedbackRecord]
    next_page_token: str
    def __init__(self, feedback: _Optional[_Iterable[_Union[FeedbackRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteFeedbackRequest(_message.Message):
    __slots__ = ("collection", "ids", "image_ids", "all")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., image_ids: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class DeleteFeedbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "confidence", "votes")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    votes: int
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., votes: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("labels", "status")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    status: ItemStatus
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("model", "is_default", "ready", "image_size", "languages")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    model: EmbeddingModel
    is_default: bool
    ready: bool
    image_size: int
    languages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., is_default: _Optional[bool] = ..., ready: _Optional[bool] = ..., image_size: _Optional[int] = ..., languages: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ...) -> None: ...

class EvaluateModelsRequest(_message.Message):
    __slots__ = ("collection", "label_key", "models", "max_images")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    label_key: str
    models: _containers.RepeatedScalarFieldContainer[str]
    max_images: int
    def __init__(self, collection: _Optional[str] = ..., label_key: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., max_images: _Optional[int] = ...) -> None: ...

class ModelEvaluation(_message.Message):
    __slots__ = ("model", "is_current", "images", "recall_at_1", "recall_at_10", "knn_accuracy", "zero_shot_accuracy")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IS_CURRENT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_1_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_10_FIELD_NUMBER: _ClassVar[int]
    KNN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    model: EmbeddingModel
    is_current: bool
    images: int
    recall_at_1: float
    recall_at_10: float
    knn_accuracy: float
    zero_shot_accuracy: float
    def __init__(self, model: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., is_current: _Optional[bool] = ..., images: _Optional[int] = ..., recall_at_1: _Optional[float] = ..., recall_at_10: _Optional[float] = ..., knn_accuracy: _Optional[float] = ..., zero_shot_accuracy: _Optional[float] = ...) -> None: ...

class EvaluateModelsResponse(_message.Message):
    __slots__ = ("evaluations", "labels", "images_without_pixels")
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_WITHOUT_PIXELS_FIELD_NUMBER: _ClassVar[int]
    evaluations: _containers.RepeatedCompositeFieldContainer[ModelEvaluation]
    labels: int
    images_without_pixels: int
    def __init__(self, evaluations: _Optional[_Iterable[_Union[ModelEvaluation, _Mapping]]] = ..., labels: _Optional[int] = ..., images_without_pixels: _Optional[int] = ...) -> None: ...

class Migration(_message.Message):
    __slots__ = ("collection", "state", "source", "target", "images_copied", "images_total", "images_skipped", "skipped_ids", "create_time", "update_time", "switch_time", "grace_end_time", "switch_when_copied", "grace_period_seconds", "error")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Migration.State]
        STATE_COPYING: _ClassVar[Migration.State]
        STATE_PAUSED: _ClassVar[Migration.State]
        STATE_COPIED: _ClassVar[Migration.State]
        STATE_SWITCHED: _ClassVar[Migration.State]
        STATE_FINISHED: _ClassVar[Migration.State]
        STATE_CANCELLED: _ClassVar[Migration.State]
        STATE_ROLLED_BACK: _ClassVar[Migration.State]
        STATE_FAILED: _ClassVar[Migration.State]
    STATE_UNSPECIFIED: Migration.State
    STATE_COPYING: Migration.State
    STATE_PAUSED: Migration.State
    STATE_COPIED: Migration.State
    STATE_SWITCHED: Migration.State
    STATE_FINISHED: Migration.State
    STATE_CANCELLED: Migration.State
    STATE_ROLLED_BACK: Migration.State
    STATE_FAILED: Migration.State
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    IMAGES_COPIED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SWITCH_TIME_FIELD_NUMBER: _ClassVar[int]
    GRACE_END_TIME_FIELD_NUMBER: _ClassVar[int]
    SWITCH_WHEN_COPIED_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    state: Migration.State
    source: EmbeddingModel
    target: EmbeddingModel
    images_copied: int
    images_total: int
    images_skipped: int
    skipped_ids: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    switch_time: _timestamp_pb2.Timestamp
    grace_end_time: _timestamp_pb2.Timestamp
    switch_when_copied: bool
    grace_period_seconds: int
    error: str
    def __init__(self, collection: _Optional[str] = ..., state: _Optional[_Union[Migration.State, str]] = ..., source: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., target: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., images_copied: _Optional[int] = ..., images_total: _Optional[int] = ..., images_skipped: _Optional[int] = ..., skipped_ids: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., switch_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., grace_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., switch_when_copied: _Optional[bool] = ..., grace_period_seconds: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class StartMigrationRequest(_message.Message):
    __slots__ = ("collection", "model", "switch_when_copied", "grace_period_seconds", "force")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SWITCH_WHEN_COPIED_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    model: str
    switch_when_copied: bool
    grace_period_seconds: int
    force: bool
    def __init__(self, collection: _Optional[str] = ..., model: _Optional[str] = ..., switch_when_copied: _Optional[bool] = ..., grace_period_seconds: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class StartMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class GetMigrationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class GetMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class PauseMigrationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class PauseMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class ResumeMigrationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class ResumeMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class CancelMigrationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class CancelMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class SwitchMigrationRequest(_message.Message):
    __slots__ = ("collection", "force")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    force: bool
    def __init__(self, collection: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class SwitchMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class RollbackMigrationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class RollbackMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class FinishMigrationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class FinishMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class Adaptation(_message.Message):
    __slots__ = ("version", "enabled", "queries_used", "judgements_used", "fitted_time", "held_out_queries", "held_out_precision_before", "held_out_precision_after", "fit_state", "fit_error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    QUERIES_USED_FIELD_NUMBER: _ClassVar[int]
    JUDGEMENTS_USED_FIELD_NUMBER: _ClassVar[int]
    FITTED_TIME_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_QUERIES_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_PRECISION_BEFORE_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_PRECISION_AFTER_FIELD_NUMBER: _ClassVar[int]
    FIT_STATE_FIELD_NUMBER: _ClassVar[int]
    FIT_ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    enabled: bool
    queries_used: int
    judgements_used: int
    fitted_time: _timestamp_pb2.Timestamp
    held_out_queries: int
    held_out_precision_before: float
    held_out_precision_after: float
    fit_state: FitState
    fit_error: str
    def __init__(self, version: _Optional[int] = ..., enabled: _Optional[bool] = ..., queries_used: _Optional[int] = ..., judgements_used: _Optional[int] = ..., fitted_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., held_out_queries: _Optional[int] = ..., held_out_precision_before: _Optional[float] = ..., held_out_precision_after: _Optional[float] = ..., fit_state: _Optional[_Union[FitState, str]] = ..., fit_error: _Optional[str] = ...) -> None: ...

class FitAdaptationRequest(_message.Message):
    __slots__ = ("collection", "enable")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ENABLE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    enable: bool
    def __init__(self, collection: _Optional[str] = ..., enable: _Optional[bool] = ...) -> None: ...

class FitAdaptationResponse(_message.Message):
    __slots__ = ("adaptation",)
    ADAPTATION_FIELD_NUMBER: _ClassVar[int]
    adaptation: Adaptation
    def __init__(self, adaptation: _Optional[_Union[Adaptation, _Mapping]] = ...) -> None: ...

class GetAdaptationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class GetAdaptationResponse(_message.Message):
    __slots__ = ("adaptation",)
    ADAPTATION_FIELD_NUMBER: _ClassVar[int]
    adaptation: Adaptation
    def __init__(self, adaptation: _Optional[_Union[Adaptation, _Mapping]] = ...) -> None: ...

class SetAdaptationEnabledRequest(_message.Message):
    __slots__ = ("collection", "enabled")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    collection: str
    enabled: bool
    def __init__(self, collection: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class SetAdaptationEnabledResponse(_message.Message):
    __slots__ = ("adaptation",)
    ADAPTATION_FIELD_NUMBER: _ClassVar[int]
    adaptation: Adaptation
    def __init__(self, adaptation: _Optional[_Union[Adaptation, _Mapping]] = ...) -> None: ...

class ResetAdaptationRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class ResetAdaptationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
