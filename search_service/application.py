"""The search service as one API: what every transport (gRPC today, HTTP/JSON beside it)
calls. Collections, images and queries come from the core, duplicates from duplicates,
classification from analysis, bulk streams from ingest; the facade adds nothing but the
names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from search_service import (
    adaptation,
    analysis,
    class_names,
    duplicates,
    evaluation,
    feedback,
    ingest,
)
from search_service.core import SearchCore
from search_service.cutoff import Cutoff
from search_service.domain import (
    Adaptation,
    Classification,
    ClassSource,
    Collection,
    Condition,
    DuplicateGroups,
    DuplicateMode,
    Duplicates,
    FeedbackRecord,
    Migration,
    ModelEvaluations,
    NewImage,
    Outcome,
    Query,
    QueryResult,
    ServedModel,
    StoredImage,
)
from search_service.migration import DEFAULT_GRACE_S, Migrations


class SearchApp:
    def __init__(self, core: SearchCore, migrations: Migrations | None = None) -> None:
        self.core = core
        self.migrations = migrations or Migrations(core, worker="")
        self.fits = adaptation.Fits()

    async def close(self) -> None:
        await self.fits.close()
        await self.core.close()

    async def create_collection(self, name: str, description: str,
                                remaining: float | None = None, model: str = "") -> Collection:
        return await self.core.create_collection(name, description, remaining, model)

    async def get_collection(self, name: str) -> Collection:
        collection = await self.core.get_collection(name)
        return replace(collection, adaptation=await adaptation.describe(
            self.core, self.fits, collection.record))

    async def list_collections(self, size: int, token: str,
                               visible: Callable[[str], bool] = lambda name: True,
                               ) -> tuple[list[Collection], str]:
        return await self.core.list_collections(size, token, visible)

    async def delete_collection(self, name: str) -> None:
        await self.core.delete_collection(name)

    async def add_images(self, name: str, images: Sequence[NewImage],
                         remaining: float | None = None) -> list[Outcome]:
        return await self.core.add_images(name, images, remaining)

    def ingest(self, items: AsyncIterator[ingest.IngestItem]
               ) -> AsyncIterator[tuple[str, Outcome]]:
        return ingest.ingest(self.core, items)

    async def get_images(self, name: str, ids: Sequence[str], include_vectors: bool
                         ) -> tuple[list[StoredImage], list[str]]:
        return await self.core.get_images(name, ids, include_vectors)

    async def list_images(self, name: str, size: int, token: str
                          ) -> tuple[list[StoredImage], str]:
        return await self.core.list_images(name, size, token)

    async def delete_images(self, name: str, ids: Sequence[str]) -> None:
        await self.core.delete_images(name, ids)

    async def get_thumbnails(self, name: str, ids: Sequence[str]
                             ) -> tuple[dict[str, bytes], list[str]]:
        return await self.core.get_thumbnails(name, ids)

    async def search(self, name: str, queries: Sequence[Query], top_k: int,
                     min_similarity: float, conditions: Sequence[Condition],
                     remaining: float | None = None,
                     cut: Cutoff = Cutoff.NONE) -> list[QueryResult]:
        return await self.core.search(name, queries, top_k, min_similarity, conditions,
                                      remaining, cut)

    async def find_duplicates(self, name: str, query: Query, min_similarity: float,
                              max_results: int, remaining: float | None = None,
                              mode: DuplicateMode | None = None) -> Duplicates:
        return await duplicates.find_duplicates(self.core, name, query, min_similarity,
                                              max_results, remaining, mode)

    async def duplicate_groups(self, name: str, min_similarity: float, neighbours: int,
                               mode: DuplicateMode | None = None) -> DuplicateGroups:
        return await duplicates.duplicate_groups(self.core, name, min_similarity, neighbours,
                                               mode)

    async def classify(self, name: str, queries: Sequence[Query], label_key: str, k: int,
                       max_labels: int, remaining: float | None = None,
                       source: ClassSource = ClassSource.LABELLED,
                       names_weight: float | None = None) -> list[Classification]:
        return await analysis.classify(self.core, name, queries, label_key, k, max_labels,
                                       remaining, source, names_weight)

    async def add_class_names(self, name: str, names: Sequence[str],
                              remaining: float | None = None) -> int:
        return await class_names.add(self.core, name, names, remaining)

    async def list_class_names(self, name: str, size: int, token: str
                               ) -> tuple[list[str], str]:
        return await class_names.listed(self.core, name, size, token)

    async def delete_class_names(self, name: str, names: Sequence[str]) -> None:
        await class_names.delete(self.core, name, names)

    async def record_feedback(self, name: str, query: Query, relevant: Sequence[str],
                              not_relevant: Sequence[str], remaining: float | None = None
                              ) -> tuple[list[str], int]:
        return await feedback.record(self.core, name, query, relevant, not_relevant, remaining)

    async def list_feedback(self, name: str, size: int, token: str, include_vectors: bool
                            ) -> tuple[list[FeedbackRecord], str]:
        return await feedback.listed(self.core, name, size, token, include_vectors)

    async def delete_feedback(self, name: str, ids: Sequence[str], image_ids: Sequence[str],
                              everything: bool) -> None:
        await feedback.delete(self.core, name, ids, image_ids, everything)

    async def list_models(self, remaining: float | None = None) -> list[ServedModel]:
        return await self.core.served_models(remaining)

    async def evaluate_models(self, name: str, label_key: str, models: Sequence[str],
                              max_images: int, remaining: float | None = None
                              ) -> ModelEvaluations:
        return await evaluation.evaluate(self.core, name, label_key, models, max_images,
                                         remaining)

    async def start_migration(self, name: str, model: str, switch_when_copied: bool = True,
                              grace_period_s: int = DEFAULT_GRACE_S, force: bool = False,
                              remaining: float | None = None) -> Migration:
        return await self.migrations.start(name, model, switch_when_copied, grace_period_s,
                                           force, remaining)

    async def get_migration(self, name: str) -> Migration:
        return await self.migrations.get(name)

    async def pause_migration(self, name: str) -> Migration:
        return await self.migrations.pause(name)

    async def resume_migration(self, name: str) -> Migration:
        return await self.migrations.resume(name)

    async def cancel_migration(self, name: str) -> Migration:
        return await self.migrations.cancel(name)

    async def switch_migration(self, name: str, force: bool = False) -> Migration:
        return await self.migrations.switch(name, force)

    async def rollback_migration(self, name: str) -> Migration:
        return await self.migrations.rollback(name)

    async def finish_migration(self, name: str) -> Migration:
        return await self.migrations.finish(name)

    async def fit_adaptation(self, name: str, enable: bool) -> Adaptation:
        return await adaptation.start_fit(self.core, self.fits, name, enable)

    async def get_adaptation(self, name: str) -> Adaptation:
        return await adaptation.get(self.core, self.fits, name)

    async def set_adaptation_enabled(self, name: str, enabled: bool) -> Adaptation:
        return await adaptation.set_enabled(self.core, self.fits, name, enabled)

    async def reset_adaptation(self, name: str) -> None:
        await adaptation.reset(self.core, self.fits, name)
