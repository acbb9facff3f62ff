"""The registry of tenant collections in Milvus: which exist, with which model, under which key.

Milvus has no transactions and no unique constraint, so three rules keep collections apart:

- **Each collection's rows carry a key of its own** (`CollectionRecord.key`), made afresh at
  every creation: a collection deleted and created again under the same name never sees the
  old one's rows, however late an old write lands. (Collections made before keys existed use
  their name as the key.)
- **Exactly one creation of a name succeeds.** Each creator inserts a claim (the claims
  collection's auto-id primary keys are allocated in increasing order), reads every claim on
  the name with Strong consistency, and only the lowest id goes on to write the registry row;
  the others get ALREADY_EXISTS. A creator that reads before a later claim exists still has
  the lower id, so two creators never both win. Claims of creators that died before writing
  their registry row expire after CLAIM_TTL_MS.
- **A deletion leaves a tombstone** naming the deleted key; `sweep` deletes that key's rows
  again once no write that began before the deletion can still be running, then the tombstone.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from pymilvus import DataType, MilvusClient

from search_service.adapters.milvus.expressions import literal
from search_service.domain import CollectionRecord, Migration, MigrationState, ModelSpace
from search_service.errors import CollectionExists, CollectionNotFound

REGISTRY = "imagesearch_collections"
CLAIMS = "imagesearch_claims"
# Registry rows whose name starts so are tombstones; no collection name can (see validation.py).
TOMBSTONE = "~deleted/"
_AFTER_TOMBSTONES = "~deleted0"  # '0' follows '/': every tombstone name sorts before it
CLAIM_TTL_MS = 60_000
# Time a write that began before a deletion may still take (the longest call deadline).
SWEEP_AFTER_MS = 15 * 60_000


def new_key() -> str:
    """A key no name can be: names never start with '~'."""
    return "~" + secrets.token_hex(10)


class Registry:
    """The registry, claims and tombstones: small Milvus collections of their own."""

    def __init__(self, client: MilvusClient, consistency: str, timeout_s: float) -> None:
        self._client = client
        self._consistency = consistency
        self._timeout_s = timeout_s

    def schemas(self) -> dict[str, Any]:
        registry = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        registry.add_field("name", DataType.VARCHAR, is_primary=True, max_length=64)
        registry.add_field("info", DataType.JSON)
        registry.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
        claims = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        claims.add_field("id", DataType.INT64, is_primary=True)
        claims.add_field("name", DataType.VARCHAR, max_length=64)
        claims.add_field("key", DataType.VARCHAR, max_length=64)
        claims.add_field("claimed_at_ms", DataType.INT64)
        claims.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
        return {REGISTRY: registry, CLAIMS: claims}

    def find(self, name: str, consistency: str | None = None) -> CollectionRecord | None:
        rows = self._client.query(REGISTRY, filter=f"name == {literal(name)}",
                                  output_fields=["name", "info"],
                                  consistency_level=consistency or self._consistency,
                                  timeout=self._timeout_s)
        return _record(rows[0]) if rows else None

    def create(self, name: str, model: ModelSpace, description: str) -> CollectionRecord:
        if self.find(name, "Strong") is not None:
            raise CollectionExists(f"collection {name!r} already exists")
        key, now = new_key(), _now_ms()
        self._client.insert(CLAIMS, [{"name": name, "key": key, "claimed_at_ms": now,
                                      "placeholder": [1.0, 0.0]}], timeout=self._timeout_s)
        claims = self._client.query(CLAIMS, filter=f"name == {literal(name)}",
                                    output_fields=["id", "key", "claimed_at_ms"],
                                    consistency_level="Strong", timeout=self._timeout_s)
        live = [c for c in claims if c["claimed_at_ms"] > now - CLAIM_TTL_MS or c["key"] == key]
        winner = min(live, key=lambda c: int(c["id"]))
        if winner["key"] != key:
            self._client.delete(CLAIMS, filter=f"key == {literal(key)}", timeout=self._timeout_s)
            raise CollectionExists(f"collection {name!r} already exists")
        record = CollectionRecord(name, model, description, now, key)
        self._client.upsert(REGISTRY, [_row(record)], timeout=self._timeout_s)
        return record

    def update(self, record: CollectionRecord) -> None:
        """Writes the record's model and migration over the stored ones, if the collection
        still exists under the same key. Milvus has no conditional write: a deletion landing
        between the read and the write here brings the name back, and `sweep` removes it
        again (its key has a tombstone)."""
        current = self.find(record.name, "Strong")
        if current is None or current.key != record.key:
            raise CollectionNotFound(f"collection {record.name!r} does not exist")
        self._client.upsert(REGISTRY, [_row(record)], timeout=self._timeout_s)

    def revenants(self, keys: set[str]) -> list[CollectionRecord]:
        """Names whose rows carry one of `keys` (deleted collections brought back by a late
        `update`)."""
        if not keys:
            return []
        rows = self._client.query(
            REGISTRY, filter=f"name < {literal('~')}", output_fields=["name", "info"],
            limit=16384, consistency_level="Strong", timeout=self._timeout_s)
        return [r for r in map(_record, rows) if r.key in keys]

    def page(self, limit: int, after: str, ordered: dict[str, str]) -> list[CollectionRecord]:
        rows = self._client.query(
            REGISTRY, filter=f"name > {literal(after)} and name < {literal('~')}",
            output_fields=["name", "info"], limit=limit, consistency_level=self._consistency,
            timeout=self._timeout_s, **ordered)
        return [_record(row) for row in rows]

    def delete(self, record: CollectionRecord) -> None:
        """Removes the name at once and leaves a tombstone for the key's rows."""
        tombstone = {**_row(record), "name": TOMBSTONE + record.key}
        tombstone["info"]["deleted_at_ms"] = _now_ms()
        self._client.upsert(REGISTRY, [tombstone], timeout=self._timeout_s)
        self._client.delete(REGISTRY, filter=f"name == {literal(record.name)}",
                            timeout=self._timeout_s)
        self._client.delete(CLAIMS, filter=f"name == {literal(record.name)}",
                            timeout=self._timeout_s)

    def tombstones(self, older_than_ms: int) -> list[CollectionRecord]:
        rows = self._client.query(
            REGISTRY, filter=f"name > {literal(TOMBSTONE)} and name < {literal(_AFTER_TOMBSTONES)}",
            output_fields=["name", "info"], limit=1000, consistency_level=self._consistency,
            timeout=self._timeout_s)
        return [_record(row) for row in rows
                if int(_info(row).get("deleted_at_ms", 0)) < older_than_ms]

    def bury(self, tombstone: CollectionRecord) -> None:
        self._client.delete(REGISTRY, filter=f"name == {literal(tombstone.name)}",
                            timeout=self._timeout_s)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _row(record: CollectionRecord) -> dict[str, Any]:
    info = {"fingerprint": record.model.fingerprint, "dimension": record.model.dimension,
            "model_name": record.model.model_name, "description": record.description,
            "created_at_ms": record.created_at_ms, "key": record.key}
    if record.migration is not None:
        info["migration"] = _migration_info(record.migration)
    return {"name": record.name, "info": info, "placeholder": [1.0, 0.0]}


def _info(row: dict[str, Any]) -> dict[str, Any]:
    info = row["info"]
    return info if isinstance(info, dict) else dict(json.loads(info))


def _record(row: dict[str, Any]) -> CollectionRecord:
    info = _info(row)
    migration = info.get("migration")
    return CollectionRecord(
        row["name"], ModelSpace(info["fingerprint"], int(info["dimension"]), info["model_name"]),
        info.get("description", ""), int(info["created_at_ms"]), info.get("key", row["name"]),
        _migration(migration) if migration else None)


def _space_info(space: ModelSpace) -> dict[str, Any]:
    return {"fingerprint": space.fingerprint, "dimension": space.dimension,
            "model_name": space.model_name}


def _space(info: dict[str, Any]) -> ModelSpace:
    return ModelSpace(info["fingerprint"], int(info["dimension"]), info["model_name"])


def _migration_info(m: Migration) -> dict[str, Any]:
    return {"source": _space_info(m.source), "target": _space_info(m.target),
            "state": m.state.value, "created_at_ms": m.created_at_ms,
            "updated_at_ms": m.updated_at_ms, "switch_when_copied": m.switch_when_copied,
            "grace_period_s": m.grace_period_s, "force": m.force, "cursor": m.cursor,
            "copied": m.copied, "total": m.total, "skipped": m.skipped,
            "skipped_ids": list(m.skipped_ids), "switched_at_ms": m.switched_at_ms,
            "error": m.error, "worker": m.worker, "lease_until_ms": m.lease_until_ms}


def _migration(info: dict[str, Any]) -> Migration:
    return Migration(
        _space(info["source"]), _space(info["target"]), MigrationState(info["state"]),
        int(info["created_at_ms"]), int(info["updated_at_ms"]),
        bool(info.get("switch_when_copied", True)), int(info.get("grace_period_s", 86_400)),
        bool(info.get("force", False)), str(info.get("cursor", "")),
        int(info.get("copied", 0)), int(info.get("total", 0)), int(info.get("skipped", 0)),
        tuple(info.get("skipped_ids", ())), int(info.get("switched_at_ms", 0)),
        str(info.get("error", "")), str(info.get("worker", "")),
        int(info.get("lease_until_ms", 0)))
