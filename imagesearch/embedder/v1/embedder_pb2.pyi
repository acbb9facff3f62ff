from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_ERROR_REASON_UNSPECIFIED: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_EMPTY: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_NOT_AN_IMAGE: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_CORRUPT_IMAGE: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_TOO_MANY_BYTES: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_TOO_MANY_PIXELS: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_TOO_SMALL: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_TEXT_TOO_LONG: _ClassVar[ItemErrorReason]
    ITEM_ERROR_REASON_INTERNAL: _ClassVar[ItemErrorReason]
ITEM_ERROR_REASON_UNSPECIFIED: ItemErrorReason
ITEM_ERROR_REASON_EMPTY: ItemErrorReason
ITEM_ERROR_REASON_NOT_AN_IMAGE: ItemErrorReason
ITEM_ERROR_REASON_CORRUPT_IMAGE: ItemErrorReason
ITEM_ERROR_REASON_TOO_MANY_BYTES: ItemErrorReason
ITEM_ERROR_REASON_TOO_MANY_PIXELS: ItemErrorReason
ITEM_ERROR_REASON_TOO_SMALL: ItemErrorReason
ITEM_ERROR_REASON_TEXT_TOO_LONG: ItemErrorReason
ITEM_ERROR_REASON_INTERNAL: ItemErrorReason

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("reason", "code", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: ItemErrorReason
    code: int
    message: str
    def __init__(self, reason: _Optional[_Union[ItemErrorReason, str]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ImageInput(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("embedding", "error", "copy_signal", "thumbnail", "pixels")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COPY_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    embedding: Embedding
    error: ItemError
    copy_signal: CopySignal
    thumbnail: bytes
    pixels: bytes
    def __init__(self, embedding: _Optional[_Union[Embedding, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., copy_signal: _Optional[_Union[CopySignal, _Mapping]] = ..., thumbnail: _Optional[bytes] = ..., pixels: _Optional[bytes] = ...) -> None: ...

class CopySignal(_message.Message):
    __slots__ = ("format", "data", "perceptual_hash")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PERCEPTUAL_HASH_FIELD_NUMBER: _ClassVar[int]
    format: str
    data: bytes
    perceptual_hash: bytes
    def __init__(self, format: _Optional[str] = ..., data: _Optional[bytes] = ..., perceptual_hash: _Optional[bytes] = ...) -> None: ...

class EmbedImagesRequest(_message.Message):
    __slots__ = ("images", "include_copy_signal", "thumbnail_max_side", "model", "pixels_max_side")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_COPY_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PIXELS_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageInput]
    include_copy_signal: bool
    thumbnail_max_side: int
    model: str
    pixels_max_side: int
    def __init__(self, images: _Optional[_Iterable[_Union[ImageInput, _Mapping]]] = ..., include_copy_signal: _Optional[bool] = ..., thumbnail_max_side: _Optional[int] = ..., model: _Optional[str] = ..., pixels_max_side: _Optional[int] = ...) -> None: ...

class EmbedImagesResponse(_message.Message):
    __slots__ = ("results", "model_fingerprint")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImageResult]
    model_fingerprint: str
    def __init__(self, results: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("text", "language")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class TextResult(_message.Message):
    __slots__ = ("embedding", "error", "truncated", "token_count", "text_tower", "language")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOWER_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    embedding: Embedding
    error: ItemError
    truncated: bool
    token_count: int
    text_tower: str
    language: str
    def __init__(self, embedding: _Optional[_Union[Embedding, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., truncated: _Optional[bool] = ..., token_count: _Optional[int] = ..., text_tower: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class EmbedTextsRequest(_message.Message):
    __slots__ = ("texts", "language", "model")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedCompositeFieldContainer[TextInput]
    language: str
    model: str
    def __init__(self, texts: _Optional[_Iterable[_Union[TextInput, _Mapping]]] = ..., language: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class EmbedTextsResponse(_message.Message):
    __slots__ = ("results", "model_fingerprint")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TextResult]
    model_fingerprint: str
    def __init__(self, results: _Optional[_Iterable[_Union[TextResult, _Mapping]]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class StreamEmbedImagesRequest(_message.Message):
    __slots__ = ("id", "image", "include_copy_signal", "thumbnail_max_side", "model", "pixels_max_side")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_COPY_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PIXELS_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: ImageInput
    include_copy_signal: bool
    thumbnail_max_side: int
    model: str
    pixels_max_side: int
    def __init__(self, id: _Optional[str] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., include_copy_signal: _Optional[bool] = ..., thumbnail_max_side: _Optional[int] = ..., model: _Optional[str] = ..., pixels_max_side: _Optional[int] = ...) -> None: ...

class StreamEmbedImagesResponse(_message.Message):
    __slots__ = ("id", "index", "result", "model_fingerprint")
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    index: int
    result: ImageResult
    model_fingerprint: str
    def __init__(self, id: _Optional[str] = ..., index: _Optional[int] = ..., result: _Optional[_Union[ImageResult, _Mapping]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_items_per_request", "max_image_bytes", "max_image_pixels", "min_image_side", "max_text_chars", "max_message_bytes")
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MIN_IMAGE_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_items_per_request: int
    max_image_bytes: int
    max_image_pixels: int
    min_image_side: int
    max_text_chars: int
    max_message_bytes: int
    def __init__(self, max_items_per_request: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., min_image_side: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class TextTower(_message.Message):
    __slots__ = ("name", "languages", "context_length", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    languages: _containers.RepeatedScalarFieldContainer[str]
    context_length: int
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., languages: _Optional[_Iterable[str]] = ..., context_length: _Optional[int] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_name", "fingerprint", "embedding_dim", "image_size", "context_length", "execution_provider", "execution_providers", "precision", "max_batch_size", "limits", "copy_signal_format", "text_towers", "is_primary", "ready")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    COPY_SIGNAL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOWERS_FIELD_NUMBER: _ClassVar[int]
    IS_PRIMARY_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    fingerprint: str
    embedding_dim: int
    image_size: int
    context_length: int
    execution_provider: str
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    precision: str
    max_batch_size: int
    limits: Limits
    copy_signal_format: str
    text_towers: _containers.RepeatedCompositeFieldContainer[TextTower]
    is_primary: bool
    ready: bool
    def __init__(self, model_name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., image_size: _Optional[int] = ..., context_length: _Optional[int] = ..., execution_provider: _Optional[str] = ..., execution_providers: _Optional[_Iterable[str]] = ..., precision: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., copy_signal_format: _Optional[str] = ..., text_towers: _Optional[_Iterable[_Union[TextTower, _Mapping]]] = ..., is_primary: _Optional[bool] = ..., ready: _Optional[bool] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "models")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
