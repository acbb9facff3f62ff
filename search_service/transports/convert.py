"""Protobuf <-> domain: the only place that knows both search.v1 messages and the core's
values. Outcome problems become canonical status code numbers here and nowhere else."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from imagesearch.errors import InvalidArgument
from imagesearch.metadata import from_value, to_value
from imagesearch.search.v1 import search_pb2 as pb
from search_service.cutoff import Cutoff
from search_service.domain import (
    DUAL_WRITES,
    Adaptation,
    Classification,
    ClassSource,
    Collection,
    Condition,
    DuplicateMode,
    Feedback,
    FeedbackRecord,
    FitState,
    Hit,
    MatchKind,
    Migration,
    MigrationState,
    ModelEvaluations,
    ModelSpace,
    NewImage,
    Op,
    Outcome,
    Part,
    Query,
    QueryResult,
    Scalar,
    ServedModel,
    StoredImage,
)

_OPS = {
    pb.OPERATOR_EQUAL: Op.EQ, pb.OPERATOR_NOT_EQUAL: Op.NE, pb.OPERATOR_LESS: Op.LT,
    pb.OPERATOR_LESS_OR_EQUAL: Op.LTE, pb.OPERATOR_GREATER: Op.GT,
    pb.OPERATOR_GREATER_OR_EQUAL: Op.GTE, pb.OPERATOR_IN: Op.IN,
    pb.OPERATOR_NOT_IN: Op.NOT_IN, pb.OPERATOR_EXISTS: Op.EXISTS,
}


def scalar(value: pb.MetadataValue) -> Scalar:
    result = from_value(value)
    if result is None:
        raise InvalidArgument("a metadata value has no kind set")
    return result


def metadata_in(entries: Any) -> dict[str, Scalar | None]:
    """A new image's metadata; a value with no kind set stays None, refused for that image."""
    return {key: from_value(value) for key, value in entries.items()}


def new_image_in(image: pb.NewImage) -> NewImage:
    return NewImage(image.id, image.data, metadata_in(image.metadata))


def condition_in(condition: pb.Condition) -> Condition:
    if condition.operator not in _OPS:
        raise InvalidArgument(f"condition on {condition.key!r} has no operator")
    return Condition(condition.key, _OPS[condition.operator],
                     tuple(scalar(v) for v in condition.values))


def query_in(query: pb.Query) -> Query:
    feedback = feedback_in(query.feedback) if query.HasField("feedback") else None
    if query.WhichOneof("kind") == "compound":
        return Query(parts=tuple(part_in(p) for p in query.compound.parts), feedback=feedback,
                     language=query.language, skip_adaptation=query.skip_adaptation)
    return replace(_atom_in(query), feedback=feedback, skip_adaptation=query.skip_adaptation)


def _atom_in(query: pb.Query | pb.QueryPart) -> Query:
    kind = query.WhichOneof("kind")
    if kind == "text":
        return Query(text=query.text, language=query.language)
    if kind == "image":
        return Query(image=query.image, language=query.language)
    if kind == "image_id":
        return Query(image_id=query.image_id, language=query.language)
    if kind == "vector":
        return Query(vector=np.asarray(query.vector.values, dtype=np.float32),
                     language=query.language)
    return Query(language=query.language)


def part_in(part: pb.QueryPart) -> Part:
    return Part(_atom_in(part), part.weight if part.HasField("weight") else 1.0)


def feedback_in(feedback: pb.Feedback) -> Feedback:
    def optional(name: str) -> float | None:
        return getattr(feedback, name) if feedback.HasField(name) else None
    return Feedback(tuple(feedback.positive_ids), tuple(feedback.negative_ids),
                    optional("query_weight"), optional("positive_weight"),
                    optional("negative_weight"), feedback.exclude_positives,
                    feedback.include_negatives)


def collection_out(collection: Collection) -> pb.Collection:
    record = collection.record
    out = pb.Collection(
        name=record.name, description=record.description, image_count=collection.image_count,
        create_time=_time(record.created_at_ms), model=model_out(record.model))
    if record.migration is not None and record.migration.state in DUAL_WRITES:
        out.migration.CopyFrom(migration_out(record.name, record.migration))
    if collection.adaptation is not None:
        out.adaptation.CopyFrom(adaptation_out(collection.adaptation))
    return out


def model_out(space: ModelSpace) -> pb.EmbeddingModel:
    return pb.EmbeddingModel(name=space.model_name, fingerprint=space.fingerprint,
                             dimension=space.dimension)


def _time(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


_MIGRATION_STATES: dict[MigrationState, Any] = {
    state: pb.Migration.State.Value("STATE_" + state.name) for state in MigrationState}


def migration_out(collection: str, m: Migration) -> pb.Migration:
    out = pb.Migration(
        collection=collection, state=_MIGRATION_STATES[m.state], source=model_out(m.source),
        target=model_out(m.target), images_copied=m.copied, images_total=m.total,
        images_skipped=m.skipped, skipped_ids=m.skipped_ids,
        create_time=_time(m.created_at_ms), update_time=_time(m.updated_at_ms),
        switch_when_copied=m.switch_when_copied, grace_period_seconds=m.grace_period_s,
        error=m.error)
    if m.switched_at_ms:
        out.switch_time.CopyFrom(_time(m.switched_at_ms))
    if m.state is MigrationState.SWITCHED:
        out.grace_end_time.CopyFrom(_time(m.grace_ends_at_ms))
    return out


def served_model_out(model: ServedModel) -> pb.ServedModel:
    return pb.ServedModel(model=model_out(model.space), is_default=model.is_default,
                          ready=model.ready, image_size=model.image_size,
                          languages=model.languages)


def evaluations_out(report: ModelEvaluations) -> pb.EvaluateModelsResponse:
    return pb.EvaluateModelsResponse(
        labels=report.labels, images_without_pixels=report.images_without_pixels,
        evaluations=[pb.ModelEvaluation(
            model=model_out(e.space), is_current=e.is_current, images=e.images,
            recall_at_1=e.recall_at_1, recall_at_10=e.recall_at_10,
            knn_accuracy=e.knn_accuracy, zero_shot_accuracy=e.zero_shot_accuracy)
            for e in report.evaluations])


def feedback_out(record: FeedbackRecord) -> pb.FeedbackRecord:
    recorded = Timestamp()
    recorded.FromMilliseconds(record.recorded_at_ms)
    out = pb.FeedbackRecord(id=record.id, image_id=record.image_id, relevant=record.relevant,
                            query_kind=record.query_kind,
                            query_description=record.query_description, record_time=recorded)
    if record.query_vector is not None:
        out.query_vector[:] = record.query_vector.tolist()
    return out


def _metadata_out(metadata: dict[str, Any]) -> dict[str, pb.MetadataValue]:
    return {k: to_value(v) for k, v in metadata.items()}


def image_out(image: StoredImage) -> pb.StoredImage:
    out = pb.StoredImage(id=image.external_id, metadata=_metadata_out(image.metadata))
    if image.vector is not None:
        out.vector[:] = image.vector.tolist()
    return out


_MODES: dict[int, DuplicateMode] = {pb.DUPLICATE_MODE_COPIES: DuplicateMode.COPIES,
                                    pb.DUPLICATE_MODE_SIMILAR: DuplicateMode.SIMILAR}
_MATCHES = {MatchKind.EXACT: pb.MATCH_KIND_EXACT, MatchKind.COPY: pb.MATCH_KIND_COPY,
            MatchKind.SIMILAR: pb.MATCH_KIND_SIMILAR}


_CUTOFFS: dict[int, Cutoff] = {pb.CUTOFF_UNSPECIFIED: Cutoff.NONE,
                               pb.CUTOFF_NONE: Cutoff.NONE, pb.CUTOFF_LARGEST_GAP: Cutoff.GAP,
                               pb.CUTOFF_Z_SCORE: Cutoff.ZSCORE}


def cutoff_in(cutoff: int) -> Cutoff:
    if cutoff not in _CUTOFFS:
        raise InvalidArgument(f"cutoff {cutoff} is not a Cutoff (NONE 1, LARGEST_GAP 2, "
                              "Z_SCORE 3)")
    return _CUTOFFS[cutoff]


def mode_in(mode: int) -> DuplicateMode | None:
    if mode == pb.DUPLICATE_MODE_UNSPECIFIED:
        return None
    if mode not in _MODES:
        raise InvalidArgument(f"mode {mode} is not a DuplicateMode (COPIES 1, SIMILAR 2)")
    return _MODES[mode]


_SOURCES: dict[int, ClassSource] = {pb.CLASS_SOURCE_UNSPECIFIED: ClassSource.LABELLED,
                                   pb.CLASS_SOURCE_LABELLED_IMAGES: ClassSource.LABELLED,
                                   pb.CLASS_SOURCE_NAMES: ClassSource.NAMES,
                                   pb.CLASS_SOURCE_BOTH: ClassSource.BOTH}


def source_in(source: int) -> ClassSource:
    if source not in _SOURCES:
        raise InvalidArgument(f"source {source} is not a ClassSource (LABELLED_IMAGES 1, "
                              "NAMES 2, BOTH 3)")
    return _SOURCES[source]


def mode_out(mode: DuplicateMode) -> pb.DuplicateMode:
    return (pb.DUPLICATE_MODE_COPIES if mode is DuplicateMode.COPIES
            else pb.DUPLICATE_MODE_SIMILAR)


def hit_out(hit: Hit) -> pb.Hit:
    found = pb.Hit(id=hit.external_id, similarity=hit.similarity,
                   metadata=_metadata_out(hit.metadata))
    if hit.match is not None:
        found.match = _MATCHES[hit.match]
    if hit.evidence is not None:
        e = hit.evidence
        found.evidence.CopyFrom(pb.CopyEvidence(hash_distance=e.hash_distance,
                                                mirrored=e.mirrored, inliers=e.inliers,
                                                correlation=e.correlation))
    return found


def status_out(outcome: Outcome) -> pb.ItemStatus:
    if outcome.problem is None:
        return pb.ItemStatus()
    code = getattr(grpc.StatusCode, outcome.problem.value).value[0]
    return pb.ItemStatus(code=code, message=outcome.message)


def result_out(result: QueryResult) -> pb.QueryResult:
    return pb.QueryResult(hits=[hit_out(h) for h in result.hits],
                          status=status_out(result.outcome), text_towers=result.text_towers)


def classification_out(result: Classification) -> pb.Classification:
    return pb.Classification(labels=[
        pb.LabelScore(label=s.label, confidence=s.confidence, votes=s.votes)
        for s in result.labels], status=status_out(result.outcome))


_FIT_STATES = {FitState.NONE: pb.FIT_STATE_NONE, FitState.FITTING: pb.FIT_STATE_FITTING,
               FitState.DONE: pb.FIT_STATE_DONE, FitState.FAILED: pb.FIT_STATE_FAILED}


def adaptation_out(adaptation: Adaptation) -> pb.Adaptation:
    out = pb.Adaptation(
        version=adaptation.version, enabled=adaptation.enabled,
        queries_used=adaptation.queries, judgements_used=adaptation.judgements,
        held_out_queries=adaptation.held_out,
        held_out_precision_before=adaptation.held_out_before,
        held_out_precision_after=adaptation.held_out_after,
        fit_state=_FIT_STATES[adaptation.state], fit_error=adaptation.fit_error)
    if adaptation.fitted_ms:
        out.fitted_time.FromMilliseconds(adaptation.fitted_ms)
    return out
