"""gRPC servicer of the search service: convert the request, check the token's scopes, call
the application, convert the response. Errors become statuses in the error interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from imagesearch.errors import ResourceExhausted
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.serving.auth import Level
from search_service.application import SearchApp
from search_service.errors import MilvusUnavailable
from search_service.ingest import IngestItem
from search_service.migration import DEFAULT_GRACE_S
from search_service.transports import convert as out
from search_service.transports.access import may_read, require, requires
from search_service.transports.convert import condition_in, new_image_in, query_in

M = TypeVar("M", bound=Message)


def _remaining(context: grpc.aio.ServicerContext) -> float | None:
    remaining: float | None = context.time_remaining()
    return remaining


class AppHolder:
    """The application, once Milvus has been reached: until then every call is UNAVAILABLE."""

    def __init__(self, app: SearchApp | None = None) -> None:
        self.app = app

    def get(self) -> SearchApp:
        if self.app is None:
            raise MilvusUnavailable("Milvus is not connected yet; retry shortly")
        return self.app


class SearchServicer:
    def __init__(self, app: SearchApp | AppHolder, max_message_bytes: int = 64 << 20) -> None:
        self._holder = app if isinstance(app, AppHolder) else AppHolder(app)
        self._max_bytes = max_message_bytes

    def _sized(self, response: M) -> M:
        """The response, or a clear RESOURCE_EXHAUSTED instead of gRPC's own when it would
        not fit in a message (many hits with large metadata, vectors of a whole page)."""
        size = response.ByteSize()
        if size > self._max_bytes:
            raise ResourceExhausted(
                f"the answer would be {size} bytes, over the {self._max_bytes}-byte message "
                "limit: ask for fewer results (top_k, page_size, queries) or no vectors")
        return response

    @property
    def _app(self) -> SearchApp:
        return self._holder.get()

    @requires(Level.ADMIN, "name")
    async def CreateCollection(self, request: pb.CreateCollectionRequest,
                               context: grpc.aio.ServicerContext) -> pb.CreateCollectionResponse:
        made = await self._app.create_collection(request.name, request.description,
                                                 _remaining(context), request.model)
        return pb.CreateCollectionResponse(collection=out.collection_out(made))

    @requires(Level.READ, "name")
    async def GetCollection(self, request: pb.GetCollectionRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetCollectionResponse:
        found = await self._app.get_collection(request.name)
        return pb.GetCollectionResponse(collection=out.collection_out(found))

    @requires(Level.READ, None)
    async def ListCollections(self, request: pb.ListCollectionsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListCollectionsResponse:
        page, token = await self._app.list_collections(request.page_size, request.page_token,
                                                       visible=may_read)
        return pb.ListCollectionsResponse(
            collections=[out.collection_out(c) for c in page], next_page_token=token)

    @requires(Level.ADMIN, "name")
    async def DeleteCollection(self, request: pb.DeleteCollectionRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeleteCollectionResponse:
        await self._app.delete_collection(request.name)
        return pb.DeleteCollectionResponse()

    @requires(Level.WRITE, "collection")
    async def AddImages(self, request: pb.AddImagesRequest,
                        context: grpc.aio.ServicerContext) -> pb.AddImagesResponse:
        outcomes = await self._app.add_images(
            request.collection, [new_image_in(i) for i in request.images], _remaining(context))
        return pb.AddImagesResponse(results=[out.status_out(o) for o in outcomes])

    @requires(Level.WRITE, None)
    async def IngestImages(
        self, requests: AsyncIterator[pb.IngestImagesRequest], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.IngestImagesResponse]:
        async def items() -> AsyncIterator[IngestItem]:
            async for r in requests:
                require(Level.WRITE, r.collection)
                yield IngestItem(r.collection, new_image_in(r.image))

        index = 0
        async for image_id, outcome in self._app.ingest(items()):
            yield pb.IngestImagesResponse(id=image_id, index=index,
                                          status=out.status_out(outcome))
            index += 1

    @requires(Level.READ, "collection")
    async def GetImages(self, request: pb.GetImagesRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetImagesResponse:
        found, missing = await self._app.get_images(request.collection, list(request.ids),
                                                    request.include_vectors)
        return self._sized(pb.GetImagesResponse(images=[out.image_out(i) for i in found],
                                                missing_ids=missing))

    @requires(Level.READ, "collection")
    async def ListImages(self, request: pb.ListImagesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListImagesResponse:
        images, token = await self._app.list_images(request.collection, request.page_size,
                                                    request.page_token)
        return self._sized(pb.ListImagesResponse(images=[out.image_out(i) for i in images],
                                                 next_page_token=token))

    @requires(Level.WRITE, "collection")
    async def DeleteImages(self, request: pb.DeleteImagesRequest,
                           context: grpc.aio.ServicerContext) -> pb.DeleteImagesResponse:
        await self._app.delete_images(request.collection, list(request.ids))
        return pb.DeleteImagesResponse()

    @requires(Level.READ, "collection")
    async def GetThumbnails(self, request: pb.GetThumbnailsRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetThumbnailsResponse:
        found, missing = await self._app.get_thumbnails(request.collection, list(request.ids))
        return self._sized(pb.GetThumbnailsResponse(
            thumbnails=[pb.Thumbnail(id=i, jpeg=data) for i, data in found.items()],
            missing_ids=missing))

    @requires(Level.READ, "collection")
    async def Search(self, request: pb.SearchRequest,
                     context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        minimum = request.min_similarity if request.HasField("min_similarity") else -1.0
        results = await self._app.search(
            request.collection, [query_in(q) for q in request.queries], request.top_k, minimum,
            [condition_in(c) for c in request.filter], _remaining(context),
            out.cutoff_in(request.cutoff))
        return self._sized(pb.SearchResponse(results=[out.result_out(r) for r in results]))

    @requires(Level.READ, "collection")
    async def FindDuplicates(self, request: pb.FindDuplicatesRequest,
                             context: grpc.aio.ServicerContext) -> pb.FindDuplicatesResponse:
        found = await self._app.find_duplicates(
            request.collection, query_in(request.query), request.min_similarity,
            request.max_results, _remaining(context), out.mode_in(request.mode))
        return self._sized(pb.FindDuplicatesResponse(
            duplicates=[out.hit_out(h) for h in found.hits], mode=out.mode_out(found.mode),
            unverified=found.unverified))

    @requires(Level.READ, "collection")
    async def FindDuplicateGroups(
        self, request: pb.FindDuplicateGroupsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.FindDuplicateGroupsResponse:
        found = await self._app.duplicate_groups(
            request.collection, request.min_similarity, request.neighbours,
            out.mode_in(request.mode))
        return self._sized(pb.FindDuplicateGroupsResponse(
            images_scanned=found.scanned, mode=out.mode_out(found.mode),
            images_unverified=found.unverified, groups=[
                pb.DuplicateGroup(ids=g.ids, min_similarity=g.min_similarity)
                for g in found.groups]))

    @requires(Level.READ, "collection")
    async def Classify(self, request: pb.ClassifyRequest,
                       context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        results = await self._app.classify(
            request.collection, [query_in(q) for q in request.queries], request.label_key,
            request.k, request.max_labels, _remaining(context), out.source_in(request.source),
            request.names_weight if request.HasField("names_weight") else None)
        return pb.ClassifyResponse(results=[out.classification_out(r) for r in results])

    @requires(Level.WRITE, "collection")
    async def AddClassNames(self, request: pb.AddClassNamesRequest,
                            context: grpc.aio.ServicerContext) -> pb.AddClassNamesResponse:
        held = await self._app.add_class_names(request.collection, list(request.names),
                                               _remaining(context))
        return pb.AddClassNamesResponse(class_name_count=held)

    @requires(Level.READ, "collection")
    async def ListClassNames(self, request: pb.ListClassNamesRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListClassNamesResponse:
        names, token = await self._app.list_class_names(request.collection, request.page_size,
                                                        request.page_token)
        return pb.ListClassNamesResponse(names=names, next_page_token=token)

    @requires(Level.WRITE, "collection")
    async def DeleteClassNames(self, request: pb.DeleteClassNamesRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeleteClassNamesResponse:
        await self._app.delete_class_names(request.collection, list(request.names))
        return pb.DeleteClassNamesResponse()

    @requires(Level.WRITE, "collection")
    async def RecordFeedback(self, request: pb.RecordFeedbackRequest,
                             context: grpc.aio.ServicerContext) -> pb.RecordFeedbackResponse:
        ids, held = await self._app.record_feedback(
            request.collection, query_in(request.query), list(request.relevant_ids),
            list(request.not_relevant_ids), _remaining(context))
        return pb.RecordFeedbackResponse(feedback_ids=ids, feedback_count=held)

    @requires(Level.READ, "collection")
    async def ListFeedback(self, request: pb.ListFeedbackRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListFeedbackResponse:
        page, token = await self._app.list_feedback(request.collection, request.page_size,
                                                    request.page_token, request.include_vectors)
        return pb.ListFeedbackResponse(feedback=[out.feedback_out(r) for r in page],
                                       next_page_token=token)

    @requires(Level.WRITE, "collection")
    async def DeleteFeedback(self, request: pb.DeleteFeedbackRequest,
                             context: grpc.aio.ServicerContext) -> pb.DeleteFeedbackResponse:
        await self._app.delete_feedback(request.collection, list(request.ids),
                                        list(request.image_ids), request.all)
        return pb.DeleteFeedbackResponse()

    @requires(Level.READ, None)
    async def ListModels(self, request: pb.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        models = await self._app.list_models(_remaining(context))
        return pb.ListModelsResponse(models=[out.served_model_out(m) for m in models])

    @requires(Level.WRITE, "collection")
    async def EvaluateModels(self, request: pb.EvaluateModelsRequest,
                             context: grpc.aio.ServicerContext) -> pb.EvaluateModelsResponse:
        report = await self._app.evaluate_models(request.collection, request.label_key,
                                                 list(request.models), request.max_images,
                                                 _remaining(context))
        return out.evaluations_out(report)

    @requires(Level.ADMIN, "collection")
    async def StartMigration(self, request: pb.StartMigrationRequest,
                             context: grpc.aio.ServicerContext) -> pb.StartMigrationResponse:
        migration = await self._app.start_migration(
            request.collection, request.model,
            request.switch_when_copied if request.HasField("switch_when_copied") else True,
            request.grace_period_seconds if request.HasField("grace_period_seconds")
            else DEFAULT_GRACE_S, request.force, _remaining(context))
        return pb.StartMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.READ, "collection")
    async def GetMigration(self, request: pb.GetMigrationRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetMigrationResponse:
        migration = await self._app.get_migration(request.collection)
        return pb.GetMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.ADMIN, "collection")
    async def PauseMigration(self, request: pb.PauseMigrationRequest,
                             context: grpc.aio.ServicerContext) -> pb.PauseMigrationResponse:
        migration = await self._app.pause_migration(request.collection)
        return pb.PauseMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.ADMIN, "collection")
    async def ResumeMigration(self, request: pb.ResumeMigrationRequest,
                              context: grpc.aio.ServicerContext) -> pb.ResumeMigrationResponse:
        migration = await self._app.resume_migration(request.collection)
        return pb.ResumeMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.ADMIN, "collection")
    async def CancelMigration(self, request: pb.CancelMigrationRequest,
                              context: grpc.aio.ServicerContext) -> pb.CancelMigrationResponse:
        migration = await self._app.cancel_migration(request.collection)
        return pb.CancelMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.ADMIN, "collection")
    async def SwitchMigration(self, request: pb.SwitchMigrationRequest,
                              context: grpc.aio.ServicerContext) -> pb.SwitchMigrationResponse:
        migration = await self._app.switch_migration(request.collection, request.force)
        return pb.SwitchMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.ADMIN, "collection")
    async def RollbackMigration(self, request: pb.RollbackMigrationRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.RollbackMigrationResponse:
        migration = await self._app.rollback_migration(request.collection)
        return pb.RollbackMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.ADMIN, "collection")
    async def FinishMigration(self, request: pb.FinishMigrationRequest,
                              context: grpc.aio.ServicerContext) -> pb.FinishMigrationResponse:
        migration = await self._app.finish_migration(request.collection)
        return pb.FinishMigrationResponse(
            migration=out.migration_out(request.collection, migration))

    @requires(Level.WRITE, "collection")
    async def FitAdaptation(self, request: pb.FitAdaptationRequest,
                            context: grpc.aio.ServicerContext) -> pb.FitAdaptationResponse:
        fitted = await self._app.fit_adaptation(request.collection, request.enable)
        return pb.FitAdaptationResponse(adaptation=out.adaptation_out(fitted))

    @requires(Level.READ, "collection")
    async def GetAdaptation(self, request: pb.GetAdaptationRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetAdaptationResponse:
        found = await self._app.get_adaptation(request.collection)
        return pb.GetAdaptationResponse(adaptation=out.adaptation_out(found))

    @requires(Level.WRITE, "collection")
    async def SetAdaptationEnabled(self, request: pb.SetAdaptationEnabledRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.SetAdaptationEnabledResponse:
        switched = await self._app.set_adaptation_enabled(request.collection, request.enabled)
        return pb.SetAdaptationEnabledResponse(adaptation=out.adaptation_out(switched))

    @requires(Level.WRITE, "collection")
    async def ResetAdaptation(self, request: pb.ResetAdaptationRequest,
                              context: grpc.aio.ServicerContext) -> pb.ResetAdaptationResponse:
        await self._app.reset_adaptation(request.collection)
        return pb.ResetAdaptationResponse()
