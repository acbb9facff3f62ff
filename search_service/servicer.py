"""gRPC servicer of the search service: converts messages, calls the core, converts back.

All protobuf <-> domain conversion lives here. Errors become statuses in the interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from imagesearch.errors import InvalidArgument
from imagesearch.metadata import from_value, to_value
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.serving.auth import Level
from search_service import analysis, ingest
from search_service.access import may_read, require, requires
from search_service.core import ItemStatus, NewImage, Query, SearchCore
from search_service.errors import MilvusUnavailable
from search_service.filters import Condition, Op, Scalar
from search_service.registry import CollectionRecord
from search_service.store import Hit, StoredImage

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


def collection_out(record: CollectionRecord, count: int) -> pb.Collection:
    created = Timestamp()
    created.FromMilliseconds(record.created_at_ms)
    return pb.Collection(
        name=record.name, description=record.description, image_count=count,
        create_time=created, model=pb.EmbeddingModel(
            name=record.model.model_name, fingerprint=record.model.fingerprint,
            dimension=record.model.dimension))


def image_out(image: StoredImage) -> pb.StoredImage:
    out = pb.StoredImage(id=image.external_id,
                         metadata={k: to_value(v) for k, v in image.metadata.items()})
    if image.vector is not None:
        out.vector[:] = image.vector.tolist()
    return out


def hit_out(hit: Hit) -> pb.Hit:
    return pb.Hit(id=hit.external_id, similarity=hit.similarity,
                  metadata={k: to_value(v) for k, v in hit.metadata.items()})


def status_out(status: ItemStatus) -> pb.ItemStatus:
    return pb.ItemStatus(code=status.code, message=status.message)


def condition_in(condition: pb.Condition) -> Condition:
    if condition.operator not in _OPS:
        raise InvalidArgument(f"condition on {condition.key!r} has no operator")
    return Condition(condition.key, _OPS[condition.operator],
                     tuple(scalar(v) for v in condition.values))


def query_in(query: pb.Query) -> Query:
    kind = query.WhichOneof("kind")
    if kind == "text":
        return Query(text=query.text)
    if kind == "image":
        return Query(image=query.image)
    if kind == "image_id":
        return Query(image_id=query.image_id)
    if kind == "vector":
        return Query(vector=np.asarray(query.vector.values, dtype=np.float32))
    return Query()


def _remaining(context: grpc.aio.ServicerContext) -> float | None:
    remaining: float | None = context.time_remaining()
    return remaining


class CoreHolder:
    """The core, once Milvus has been reached: until then every call is UNAVAILABLE."""

    def __init__(self, core: SearchCore | None = None) -> None:
        self.core = core

    def get(self) -> SearchCore:
        if self.core is None:
            raise MilvusUnavailable("Milvus is not connected yet; retry shortly")
        return self.core


class SearchServicer:
    def __init__(self, core: SearchCore | CoreHolder) -> None:
        self._holder = core if isinstance(core, CoreHolder) else CoreHolder(core)

    @property
    def _core(self) -> SearchCore:
        return self._holder.get()

    @requires(Level.ADMIN, "name")
    async def CreateCollection(self, request: pb.CreateCollectionRequest,
                               context: grpc.aio.ServicerContext) -> pb.CreateCollectionResponse:
        record, count = await self._core.create_collection(request.name, request.description,
                                                           _remaining(context))
        return pb.CreateCollectionResponse(collection=collection_out(record, count))

    @requires(Level.READ, "name")
    async def GetCollection(self, request: pb.GetCollectionRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetCollectionResponse:
        record, count = await self._core.get_collection(request.name)
        return pb.GetCollectionResponse(collection=collection_out(record, count))

    @requires(Level.READ, None)
    async def ListCollections(self, request: pb.ListCollectionsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListCollectionsResponse:
        page, token = await self._core.list_collections(request.page_size, request.page_token,
                                                        visible=may_read)
        return pb.ListCollectionsResponse(
            collections=[collection_out(r, c) for r, c in page], next_page_token=token)

    @requires(Level.ADMIN, "name")
    async def DeleteCollection(self, request: pb.DeleteCollectionRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeleteCollectionResponse:
        await self._core.delete_collection(request.name)
        return pb.DeleteCollectionResponse()

    @requires(Level.WRITE, "collection")
    async def AddImages(self, request: pb.AddImagesRequest,
                        context: grpc.aio.ServicerContext) -> pb.AddImagesResponse:
        images = [NewImage(i.id, i.data, metadata_in(i.metadata)) for i in request.images]
        statuses = await self._core.add_images(request.collection, images, _remaining(context))
        return pb.AddImagesResponse(results=[status_out(s) for s in statuses])

    @requires(Level.WRITE, None)
    async def IngestImages(
        self, requests: AsyncIterator[pb.IngestImagesRequest], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.IngestImagesResponse]:
        async def items() -> AsyncIterator[ingest.IngestItem]:
            async for r in requests:
                require(Level.WRITE, r.collection)
                yield ingest.IngestItem(r.collection, NewImage(
                    r.image.id, r.image.data, metadata_in(r.image.metadata)))

        index = 0
        async for image_id, status in ingest.ingest(self._core, items()):
            yield pb.IngestImagesResponse(id=image_id, index=index, status=status_out(status))
            index += 1

    @requires(Level.READ, "collection")
    async def GetImages(self, request: pb.GetImagesRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetImagesResponse:
        found, missing = await self._core.get_images(request.collection, list(request.ids),
                                                     request.include_vectors)
        return pb.GetImagesResponse(images=[image_out(i) for i in found], missing_ids=missing)

    @requires(Level.READ, "collection")
    async def ListImages(self, request: pb.ListImagesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListImagesResponse:
        images, token = await self._core.list_images(request.collection, request.page_size,
                                                     request.page_token)
        return pb.ListImagesResponse(images=[image_out(i) for i in images],
                                     next_page_token=token)

    @requires(Level.WRITE, "collection")
    async def DeleteImages(self, request: pb.DeleteImagesRequest,
                           context: grpc.aio.ServicerContext) -> pb.DeleteImagesResponse:
        await self._core.delete_images(request.collection, list(request.ids))
        return pb.DeleteImagesResponse()

    @requires(Level.READ, "collection")
    async def Search(self, request: pb.SearchRequest,
                     context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        minimum = request.min_similarity if request.HasField("min_similarity") else -1.0
        results = await self._core.search(
            request.collection, [query_in(q) for q in request.queries], request.top_k, minimum,
            tuple(condition_in(c) for c in request.filter), _remaining(context))
        return pb.SearchResponse(results=[
            pb.QueryResult(hits=[hit_out(h) for h in r.hits], status=status_out(r.status))
            for r in results])

    @requires(Level.READ, "collection")
    async def FindDuplicates(self, request: pb.FindDuplicatesRequest,
                             context: grpc.aio.ServicerContext) -> pb.FindDuplicatesResponse:
        hits = await analysis.find_duplicates(
            self._core, request.collection, query_in(request.query), request.min_similarity,
            request.max_results, _remaining(context))
        return pb.FindDuplicatesResponse(duplicates=[hit_out(h) for h in hits])

    @requires(Level.READ, "collection")
    async def FindDuplicateGroups(
        self, request: pb.FindDuplicateGroupsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.FindDuplicateGroupsResponse:
        groups, scanned = await analysis.duplicate_groups(
            self._core, request.collection, request.min_similarity, request.neighbours)
        return pb.FindDuplicateGroupsResponse(images_scanned=scanned, groups=[
            pb.DuplicateGroup(ids=g.ids, min_similarity=g.min_similarity) for g in groups])

    @requires(Level.READ, "collection")
    async def Classify(self, request: pb.ClassifyRequest,
                       context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        results = await analysis.classify(
            self._core, request.collection, [query_in(q) for q in request.queries],
            request.label_key, request.k, request.max_labels, _remaining(context))
        return pb.ClassifyResponse(results=[pb.Classification(
            labels=[pb.LabelScore(label=s.label, confidence=s.confidence, votes=s.votes)
                    for s in r.labels], status=status_out(r.status)) for r in results])
