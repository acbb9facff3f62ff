"""Where a tenant collection's rows live inside its model's Milvus collection.

Two layouts, chosen per Milvus collection when it is first used:
- `SharedLayout` (a Milvus server, and Lite files made before partitions): every tenant's rows
  in one space, told apart by the `collection` field. On a server that field is the partition
  key, so Milvus prunes each query to the tenant's partition by itself.
- `PartitionLayout` (Milvus Lite): one Milvus partition per tenant collection. Lite routes a
  partition key to one of 16 buckets but never prunes by it: every filtered query evaluated
  the filter over every tenant's rows, row by row in Python (a 512-image tenant beside a
  10k-image one: 6.7 ms flushed, 78 ms growing, against 4.5 and 22 ms in a partition of its
  own).

Rows always carry their collection key and a "<key>/<external id>" primary key, and every
filter keeps the tenant's term in both layouts: a partition prunes the work, the term is the
guarantee (Lite 3.2 ignores `partition_names` in a count(*) with an empty filter, and counts
every partition).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from search_service.adapters.milvus.expressions import compile_filter
from search_service.domain import CollectionRecord


def partition_of(key: str) -> str:
    """A valid Milvus partition name for a collection key (keys may be legacy names with
    characters partition names cannot hold)."""
    return "t_" + hashlib.sha256(key.encode()).hexdigest()[:32]


class SharedLayout:
    partitioned = False

    def reads(self, record: CollectionRecord) -> dict[str, Any]:
        """Extra arguments of a query or search."""
        return {}

    def writes(self, record: CollectionRecord) -> dict[str, Any]:
        """Extra arguments of an upsert or delete."""
        return {}

    def prepare(self, client: MilvusClient, name: str, record: CollectionRecord,
                timeout_s: float) -> None:
        """Makes room for a new tenant collection's rows."""

    def drop(self, client: MilvusClient, name: str, record: CollectionRecord,
             timeout_s: float) -> None:
        """Deletes every row of a tenant collection."""
        client.delete(name, filter=compile_filter(record.key), timeout=timeout_s)


class PartitionLayout(SharedLayout):
    partitioned = True

    def reads(self, record: CollectionRecord) -> dict[str, Any]:
        return {"partition_names": [partition_of(record.key)]}

    def writes(self, record: CollectionRecord) -> dict[str, Any]:
        return {"partition_name": partition_of(record.key)}

    # Both tolerate a racing caller doing the same (two writers making a missing partition,
    # two deletions of one collection): Milvus refuses the second, and the state is the one
    # asked for.
    def prepare(self, client: MilvusClient, name: str, record: CollectionRecord,
                timeout_s: float) -> None:
        partition = partition_of(record.key)
        if client.has_partition(name, partition, timeout=timeout_s):
            return
        try:
            client.create_partition(name, partition, timeout=timeout_s)
        except MilvusException:
            if not client.has_partition(name, partition, timeout=timeout_s):
                raise

    def drop(self, client: MilvusClient, name: str, record: CollectionRecord,
             timeout_s: float) -> None:
        partition = partition_of(record.key)
        if not client.has_partition(name, partition, timeout=timeout_s):
            return
        try:
            client.drop_partition(name, partition, timeout=timeout_s)
        except MilvusException:
            if client.has_partition(name, partition, timeout=timeout_s):
                raise


def layout_of(description: dict[str, Any], partitions: bool) -> SharedLayout:
    """The layout of an existing Milvus collection: a partition-key schema keeps the shared
    layout it was written in, whatever this store would choose for a new one."""
    keyed = any(field.get("is_partition_key") for field in description.get("fields", []))
    return PartitionLayout() if partitions and not keyed else SharedLayout()
