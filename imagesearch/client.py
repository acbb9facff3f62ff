"""A typed Python client of the search service: no raw stubs needed.

    with SearchClient("127.0.0.1:50052") as client:
        client.create_collection("photos")
        client.add_images("photos", [("cat.jpg", data, {"label": "cat"})])
        hits = client.search("photos", text="a cat on a sofa")

Every call has a deadline; UNAVAILABLE is retried with backoff by gRPC's retry policy. The
bulk `ingest` stream resumes after UNAVAILABLE from the first unacknowledged image (re-adding
an id replaces it, so resending is safe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from imagesearch.channels import ChannelConfig, ClientTls, create_channel
from imagesearch.client_adaptation import Adapting
from imagesearch.client_classes import Classifying
from imagesearch.client_feedback import RecordingFeedback
from imagesearch.client_models import ManagingModels
from imagesearch.ingest_stream import (
    IngestIncomplete,
    ItemError,
    NewItem,
    Source,
    Stream,
    code_name,
)
from imagesearch.metadata import Scalar, from_value, to_value
from imagesearch.queries import Feedback, Part
from imagesearch.queries import query as make_query
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc

__all__ = ["Feedback", "Hit", "IngestIncomplete", "ItemError", "NewItem", "Part", "SearchClient",
           "code_name", "parse_condition"]

_OPERATORS = {"=": pb.OPERATOR_EQUAL, "!=": pb.OPERATOR_NOT_EQUAL, "<": pb.OPERATOR_LESS,
              "<=": pb.OPERATOR_LESS_OR_EQUAL, ">": pb.OPERATOR_GREATER,
              ">=": pb.OPERATOR_GREATER_OR_EQUAL}
# Ids a GetImages/GetThumbnails call takes at most.
_IDS_PER_CALL = 1000


@dataclass(frozen=True)
class Hit:
    id: str
    similarity: float
    metadata: dict[str, Scalar] = field(default_factory=dict)
    match: str = ""  # duplicates: "exact", "copy" or "similar"


def parse_condition(text: str) -> pb.Condition:
    """'key=value', 'key!=value', 'key>=3'...; numbers are compared as numbers.

    A value that reads as a number or a boolean may have been stored as text (a folder named
    2024 is the label "2024"), so = and != match either form: label=2024 is label in
    [2024, "2024"]."""
    for symbol in ("!=", ">=", "<=", "=", ">", "<"):
        key, found, raw = text.partition(symbol)
        if found:
            raw = raw.strip()
            guessed = _guess(raw)
            if symbol in ("=", "!=") and not isinstance(guessed, str):
                operator = pb.OPERATOR_IN if symbol == "=" else pb.OPERATOR_NOT_IN
                return pb.Condition(key=key.strip(), operator=operator,
                                    values=[to_value(guessed), to_value(raw)])
            return pb.Condition(key=key.strip(), operator=_OPERATORS[symbol],
                                values=[to_value(guessed)])
    raise ValueError(f"filter {text!r} is not KEY=VALUE (or !=, <, <=, >, >=)")


def _guess(raw: str) -> Scalar:
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw, raw)


def _hits(hits: Iterable[pb.Hit]) -> list[Hit]:
    return [Hit(h.id, h.similarity, {k: _or_empty(from_value(v)) for k, v in h.metadata.items()},
                _MATCHES.get(h.match, "")) for h in hits]


_MATCHES = {pb.MATCH_KIND_EXACT: "exact", pb.MATCH_KIND_COPY: "copy",
            pb.MATCH_KIND_SIMILAR: "similar"}


def _mode(similar: bool) -> pb.DuplicateMode:
    return pb.DUPLICATE_MODE_SIMILAR if similar else pb.DUPLICATE_MODE_UNSPECIFIED


def _or_empty(value: Scalar | None) -> Scalar:
    return "" if value is None else value


class SearchClient(Classifying, RecordingFeedback, ManagingModels, Adapting):
    def __init__(self, target: str, timeout_s: float = 60.0, *,
                 ca_file: Path | None = None, token: str | None = None,
                 keepalive_s: float = 20.0, keepalive_timeout_s: float = 10.0) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # Round_robin over every address of the target, e.g. dns:///imagesearch-search-headless
        # :50052 on Kubernetes (one address behaves as pick_first would).
        self._channel = create_channel(target, ChannelConfig(
            "imagesearch.search.v1.SearchService", keepalive_s=keepalive_s,
            keepalive_timeout_s=keepalive_timeout_s,
            tls=ClientTls(ca_file) if ca_file is not None else None,
            initial_backoff_s=0.2, max_backoff_s=5.0))
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)
        self.timeout_s = timeout_s

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        return getattr(self._stub, method)(request, timeout=self.timeout_s,
                                           metadata=self._metadata)

    def create_collection(self, name: str, description: str = "", model: str = ""
                          ) -> pb.Collection:
        """`model`: a served model's name or fingerprint (list_models); "" the default."""
        request = pb.CreateCollectionRequest(name=name, description=description, model=model)
        collection: pb.Collection = self._call("CreateCollection", request).collection
        return collection

    def get_collection(self, name: str) -> pb.Collection:
        collection: pb.Collection = self._call(
            "GetCollection", pb.GetCollectionRequest(name=name)).collection
        return collection

    def list_collections(self) -> list[pb.Collection]:
        found, token = [], ""
        while True:
            page = self._call("ListCollections", pb.ListCollectionsRequest(page_token=token))
            found += list(page.collections)
            if not (token := page.next_page_token):
                return found

    def add_images(self, collection: str,
                   images: Sequence[tuple[str, bytes, Mapping[str, Scalar]]]) -> list[ItemError]:
        """Adds a batch (at most 256); returns the items that failed, with their reasons."""
        request = pb.AddImagesRequest(collection=collection, images=[
            pb.NewImage(id=i, data=d, metadata={k: to_value(v) for k, v in m.items()})
            for i, d, m in images])
        results = self._call("AddImages", request).results
        return [ItemError(image[0], code_name(r.code), r.message)
                for image, r in zip(images, results, strict=True) if r.code != 0]

    def ingest(self, collection: str, items: Iterable[NewItem],
               on_ack: Callable[[str, ItemError | None], None] | None = None,
               attempts: int = 4) -> list[ItemError]:
        """Streams any number of images (read lazily from `items`), each acknowledged once
        stored; `on_ack(id, error or None)` reports progress. Returns the items that failed
        (bad image, bad id...), and returns only once every item has been acknowledged -
        stored, or failed with its reason.

        If the stream ends UNAVAILABLE (a restart, a dependency down, or the server recycling
        an old connection, as SEARCH_MAX_CONNECTION_AGE_S does), every image sent and not
        acknowledged is sent again on a new stream, with exponential backoff (re-adding an id
        replaces it, so an image stored whose acknowledgement was lost is stored once). After
        `attempts` streams in a row that acknowledged nothing, raises the last error; the
        images acknowledged until then are stored, the rest may not be.
        """
        source, failed, barren = Source(items), [], 0
        while True:
            stream = Stream(collection, source)
            # No overall deadline: the stream is as long as the caller's iterator.
            call = self._stub.IngestImages(stream.requests(), metadata=self._metadata)
            try:
                for ack in call:
                    error = stream.acknowledge(ack)
                    failed += [error] if error else []
                    if on_ack is not None:
                        on_ack(ack.id, error)
                source.raise_error()  # the caller's iterator failed: the stream ended early
            except grpc.RpcError as err:
                source.raise_error()
                unsent = stream.close()
                source.give_back(unsent)
                barren = 0 if stream.acknowledged else barren + 1
                if err.code() != grpc.StatusCode.UNAVAILABLE or barren >= attempts:
                    raise
                time.sleep(min(0.2 * 2 ** barren, 5.0))
                continue
            finally:
                call.cancel()  # a no-op once it ended; else (on_ack raised) it must not linger
            unacknowledged = stream.close()
            if not unacknowledged and source.done:
                for refusal in source.refused:  # never sent: refused on this side
                    if on_ack is not None:
                        on_ack(refusal.id, refusal)
                return failed + source.refused
            # The server ended the stream without answering every image: send them again.
            source.give_back(unacknowledged)
            barren = 0 if stream.acknowledged else barren + 1
            if barren >= attempts:
                raise IngestIncomplete(f"the server ended {attempts} streams in a row without "
                                       f"acknowledging {len(unacknowledged)} images")

    def get_images(self, collection: str, ids: Sequence[str]) -> list[pb.StoredImage]:
        request = pb.GetImagesRequest(collection=collection, ids=list(ids))
        return list(self._call("GetImages", request).images)

    def list_images(self, collection: str, page_size: int = 500) -> Iterator[pb.StoredImage]:
        """Every image of the collection in id order, fetched a page at a time."""
        token = ""
        while True:
            page = self._call("ListImages", pb.ListImagesRequest(
                collection=collection, page_size=page_size, page_token=token))
            yield from page.images
            if not (token := page.next_page_token):
                return

    def thumbnails(self, collection: str, ids: Sequence[str]) -> tuple[dict[str, bytes],
                                                                     list[str]]:
        """The JPEG thumbnails the service keeps of `ids` (at most 256 pixels a side), and
        the ids it has none of."""
        found: dict[str, bytes] = {}
        missing: list[str] = []
        batches = [list(ids[start:start + _IDS_PER_CALL])
                   for start in range(0, len(ids), _IDS_PER_CALL)]
        while batches:
            batch = batches.pop(0)
            try:
                answer = self._call("GetThumbnails", pb.GetThumbnailsRequest(
                    collection=collection, ids=batch))
            except grpc.RpcError as err:
                # The answer would pass the service's message limit (large thumbnails, a
                # small limit): ask for half as many a call.
                if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or len(batch) == 1:
                    raise
                half = len(batch) // 2
                batches[:0] = [batch[:half], batch[half:]]
                continue
            found.update((t.id, t.jpeg) for t in answer.thumbnails)
            missing += answer.missing_ids
        return found, missing

    def delete_images(self, collection: str, ids: Sequence[str]) -> None:
        self._call("DeleteImages", pb.DeleteImagesRequest(collection=collection, ids=list(ids)))

    def delete_collection(self, name: str) -> None:
        self._call("DeleteCollection", pb.DeleteCollectionRequest(name=name))

    def search(self, collection: str, *, text: str | None = None, image: bytes | None = None,
               image_id: str | None = None, top_k: int = 10,
               filters: Sequence[str] = (), min_similarity: float | None = None,
               parts: Sequence[Part] = (), feedback: Feedback | None = None,
               cutoff_gap: bool = False, language: str = "",
               skip_adaptation: bool = False, cutoff_zscore: bool = False) -> list[Hit]:
        """By text, image bytes or an indexed image's id; with `parts`, by the weighted sum of
        those parts and the one of text, image or image_id given (weight 1); `feedback`
        refines the query by judged examples (see imagesearch.queries); `cutoff_gap` keeps
        only the hits before the largest drop in similarity within top_k, `cutoff_zscore`
        those 1.5 standard deviations above the mean similarity within top_k. `language`: the
        text's (BCP 47, or "auto"), which picks the model's text tower. `skip_adaptation`:
        the texts as embedded, not through the collection's learned adaptation."""
        query = make_query(text=text, image=image, image_id=image_id, parts=parts,
                           feedback=feedback, language=language,
                           skip_adaptation=skip_adaptation)
        request = pb.SearchRequest(collection=collection, queries=[query], top_k=top_k,
                                   filter=[parse_condition(f) for f in filters],
                                   cutoff=pb.CUTOFF_LARGEST_GAP if cutoff_gap
                                   else pb.CUTOFF_Z_SCORE if cutoff_zscore
                                   else pb.CUTOFF_UNSPECIFIED)
        if min_similarity is not None:
            request.min_similarity = min_similarity
        (result,) = self._call("Search", request).results
        if result.status.code != 0:
            raise ValueError(result.status.message)
        return _hits(result.hits)

    def find_duplicates(self, collection: str, *, image: bytes | None = None,
                        image_id: str | None = None, min_similarity: float = 0.0,
                        max_results: int = 10, similar: bool = False,
                        parts: Sequence[Part] = ()) -> list[Hit]:
        """Copies of the image (the service's default), or with `similar` look-alikes; with
        image and image_id `parts`, look-alikes of their weighted sum."""
        query = make_query(image=image, image_id=image_id, parts=parts)
        request = pb.FindDuplicatesRequest(collection=collection, query=query,
                                           min_similarity=min_similarity,
                                           max_results=max_results, mode=_mode(similar))
        return _hits(self._call("FindDuplicates", request).duplicates)

    def duplicate_groups(self, collection: str, min_similarity: float = 0.0,
                         similar: bool = False) -> list[tuple[list[str], float]]:
        request = pb.FindDuplicateGroupsRequest(collection=collection,
                                                min_similarity=min_similarity,
                                                mode=_mode(similar))
        response = self._call("FindDuplicateGroups", request)
        return [(list(g.ids), g.min_similarity) for g in response.groups]

