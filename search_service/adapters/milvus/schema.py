"""The Milvus collection that holds one space's vectors (an embedding model's, or the copy
index's), for every tenant."""

from __future__ import annotations

from typing import Any

from pymilvus import DataType, MilvusClient

from search_service.adapters.milvus.expressions import COLLECTION_FIELD, METADATA_FIELD
from search_service.domain import ModelSpace

VECTOR_FIELD = "vector"
VECTORS_PREFIX = "imagesearch_vectors_"


def vectors_collection(model: ModelSpace) -> str:
    return VECTORS_PREFIX + model.fingerprint.removeprefix("sha256:")[:16]


def vectors_schema(model: ModelSpace, partition_key: bool) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    # Lengths leave room for UTF-8: ids are up to 256 characters.
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=1100)
    schema.add_field(COLLECTION_FIELD, DataType.VARCHAR, max_length=64,
                     is_partition_key=partition_key)
    schema.add_field("external_id", DataType.VARCHAR, max_length=1024)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=model.dimension)
    schema.add_field(METADATA_FIELD, DataType.JSON)
    schema.add_field("updated_at_ms", DataType.INT64)
    return schema
