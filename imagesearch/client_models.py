"""SearchClient's model calls: the served models, evaluating them on a collection's labelled
images, and moving a collection to another model (kept apart so client.py stays one
screenful per job)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from imagesearch.search.v1 import search_pb2 as pb

# Where a migration rests until someone acts (or its grace period ends).
RESTING = frozenset({pb.Migration.STATE_COPIED, pb.Migration.STATE_SWITCHED,
                     pb.Migration.STATE_FINISHED, pb.Migration.STATE_CANCELLED,
                     pb.Migration.STATE_ROLLED_BACK, pb.Migration.STATE_FAILED,
                     pb.Migration.STATE_PAUSED})
CONTROLS = ("pause", "resume", "cancel", "switch", "rollback", "finish")


class ManagingModels:
    """Mixed into SearchClient, which provides `_call`."""

    def _call(self, method: str, request: Any) -> Any:
        raise NotImplementedError

    def list_models(self) -> list[pb.ServedModel]:
        """The models the embedder serves, the default first."""
        return list(self._call("ListModels", pb.ListModelsRequest()).models)

    def evaluate_models(self, collection: str, label_key: str = "label",
                        models: Sequence[str] = (), max_images: int = 0
                        ) -> pb.EvaluateModelsResponse:
        """Each served model (or those named) scored on the collection's labelled images,
        best first."""
        response: pb.EvaluateModelsResponse = self._call(
            "EvaluateModels", pb.EvaluateModelsRequest(
                collection=collection, label_key=label_key, models=list(models),
                max_images=max_images))
        return response

    def start_migration(self, collection: str, model: str, *, switch_when_copied: bool = True,
                        grace_period_s: int | None = None, force: bool = False
                        ) -> pb.Migration:
        request = pb.StartMigrationRequest(collection=collection, model=model, force=force,
                                           switch_when_copied=switch_when_copied)
        if grace_period_s is not None:
            request.grace_period_seconds = grace_period_s
        migration: pb.Migration = self._call("StartMigration", request).migration
        return migration

    def get_migration(self, collection: str) -> pb.Migration:
        migration: pb.Migration = self._call(
            "GetMigration", pb.GetMigrationRequest(collection=collection)).migration
        return migration

    def control_migration(self, collection: str, action: str, force: bool = False
                          ) -> pb.Migration:
        """`action`: pause, resume, cancel, switch (with `force`), rollback or finish."""
        if action not in CONTROLS:
            raise ValueError(f"unknown migration action {action!r}: one of {CONTROLS}")
        method = f"{action.capitalize()}Migration"
        request = getattr(pb, f"{method}Request")(collection=collection)
        if force and action == "switch":
            request.force = True
        migration: pb.Migration = self._call(method, request).migration
        return migration

    def wait_for_migration(self, collection: str, timeout_s: float = 3600.0,
                           poll_s: float = 1.0) -> pb.Migration:
        """Polls until the migration rests (switched, copied, paused, failed, ended)."""
        deadline = time.monotonic() + timeout_s
        while True:
            migration = self.get_migration(collection)
            if migration.state in RESTING or time.monotonic() > deadline:
                return migration
            time.sleep(poll_s)
