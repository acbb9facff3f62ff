"""Property-based fuzzing of the search API, two tenants at once (hypothesis).

Whatever one tenant sends - names, ids, metadata, filters, vectors, limits, page tokens -
the service answers with a status a caller can act on (never INTERNAL or UNKNOWN), and never
shows or changes the other tenant's rows. A second property holds the filter compiler to a
model: arbitrary metadata strings select exactly the rows Python says they should.
"""

from __future__ import annotations

import asyncio
import math

import grpc
import numpy as np
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from tests.search_fixtures import scene_images

VICTIM, FUZZER = "fuzz-victim", "fuzz-tenant"
VICTIM_PREFIX = "V~"  # no id the fuzzer sends starts so
ACTIONABLE_ONLY = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Characters that break expressions, paths, terminals and JSON, mixed with plain ones.
NASTY = [*"'\"\\/%*[](){}~ ,=<>!&|\n\t\x00\x7f\u0085\u2028é日", "ab", "in", "or", "and"]
nasty = st.lists(st.sampled_from(NASTY), min_size=1, max_size=8).map("".join)
texts = st.text(max_size=40) | nasty | st.sampled_from([
    "", "x'] or collection == 'fuzz-victim' or pk in ['y", 'a"b', "\\", "\\'", "%", "*",
    "fuzz-victim", "../fuzz-victim", "~deleted/", "\u2028", "\x00", "é" * 300])
ids = texts.filter(lambda s: not s.startswith(VICTIM_PREFIX))
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2 ** 63, 2 ** 63 - 1)
values = st.one_of(
    st.builds(lambda s: pb.MetadataValue(string_value=s), st.text(max_size=30)),
    st.builds(lambda i: pb.MetadataValue(int_value=i), st.integers(-2 ** 63, 2 ** 63 - 1)),
    st.builds(lambda f: pb.MetadataValue(double_value=f), st.floats()),
    st.builds(lambda b: pb.MetadataValue(bool_value=b), st.booleans()),
    st.just(pb.MetadataValue()))
metadata = st.dictionaries(texts, values, max_size=5)
conditions = st.lists(st.builds(pb.Condition, key=texts, operator=st.integers(-1, 12),
                                values=st.lists(values, max_size=4)), max_size=4)
vectors = st.lists(st.floats(width=32), max_size=40).map(lambda v: pb.Vector(values=v))
atoms = st.one_of(
    st.builds(pb.Query, text=texts), st.builds(pb.Query, image_id=texts),
    st.builds(pb.Query, vector=vectors), st.builds(pb.Query, image=st.binary(max_size=64)),
    st.just(pb.Query()))
parts = st.one_of(
    st.builds(pb.QueryPart, text=texts), st.builds(pb.QueryPart, image_id=ids),
    st.builds(pb.QueryPart, vector=vectors), st.builds(pb.QueryPart, image_id=ids,
                                                       weight=st.floats(width=32)),
    st.builds(pb.QueryPart, text=texts, weight=st.floats(width=32)), st.just(pb.QueryPart()))
feedback = st.builds(pb.Feedback, positive_ids=st.lists(ids, max_size=4),
                     negative_ids=st.lists(ids, max_size=4),
                     query_weight=st.floats(width=32), positive_weight=st.floats(width=32),
                     exclude_positives=st.booleans(), include_negatives=st.booleans())
compounds = st.builds(lambda p: pb.Query(compound=pb.CompoundQuery(parts=p)),
                      st.lists(parts, max_size=18))
with_feedback = st.builds(lambda q, f: pb.Query(**{
    q.WhichOneof("kind"): getattr(q, q.WhichOneof("kind"))}, feedback=f) if q.WhichOneof(
        "kind") else pb.Query(feedback=f), atoms | compounds, feedback)
queries = st.lists(atoms | compounds | with_feedback, max_size=5)
limits = st.integers(-5, 5) | st.integers(-(2 ** 31), 2 ** 31 - 1)
similarity = st.floats(width=32)


def requests(image: bytes) -> st.SearchStrategy[tuple[str, object]]:
    """One call of the fuzzing tenant: mostly on its own collection, else on a fuzzed name
    (never the victim's own: without tokens, naming it is allowed)."""
    names = st.one_of(st.just(FUZZER), st.just(FUZZER), st.just(FUZZER),
                      texts.filter(lambda name: name != VICTIM))
    return st.one_of(
        st.tuples(st.just("AddImages"), st.builds(
            pb.AddImagesRequest, collection=names, images=st.lists(st.builds(
                pb.NewImage, id=ids, data=st.just(image) | st.binary(max_size=32),
                metadata=metadata), max_size=4))),
        st.tuples(st.just("GetImages"), st.builds(pb.GetImagesRequest, collection=names,
                                                   ids=st.lists(ids, max_size=5),
                                                   include_vectors=st.booleans())),
        st.tuples(st.just("DeleteImages"), st.builds(pb.DeleteImagesRequest,
                                                      collection=names,
                                                      ids=st.lists(ids, max_size=5))),
        st.tuples(st.just("ListImages"), st.builds(pb.ListImagesRequest, collection=names,
                                                    page_size=limits, page_token=texts)),
        st.tuples(st.just("Search"), st.builds(
            pb.SearchRequest, collection=names, queries=queries, top_k=limits,
            filter=conditions, min_similarity=similarity)),
        st.tuples(st.just("FindDuplicates"), st.builds(
            pb.FindDuplicatesRequest, collection=names, query=queries.map(
                lambda q: q[0] if q else pb.Query()), min_similarity=similarity,
            max_results=limits)),
        st.tuples(st.just("Classify"), st.builds(
            pb.ClassifyRequest, collection=names, queries=queries, label_key=texts, k=limits,
            max_labels=limits)),
        st.tuples(st.just("GetCollection"), st.builds(pb.GetCollectionRequest, name=texts)),
        st.tuples(st.just("ListCollections"), st.builds(pb.ListCollectionsRequest,
                                                         page_size=limits, page_token=texts)),
    )


def returned_ids(response: object) -> list[str]:
    found = [i.id for i in getattr(response, "images", ())]
    found += [h.id for r in getattr(response, "results", ()) for h in getattr(r, "hits", ())]
    found += [h.id for h in getattr(response, "duplicates", ())]
    return found


def snapshot(stub: search_pb2_grpc.SearchServiceStub) -> dict[str, bytes]:
    listed = stub.ListImages(pb.ListImagesRequest(collection=VICTIM, page_size=100))
    return {i.id: i.SerializeToString(deterministic=True) for i in listed.images}


@pytest_asyncio.fixture(scope="module")
async def tenants(search) -> tuple[int, bytes]:
    server, stub = search
    images = scene_images(6, seed=51)
    for name in (VICTIM, FUZZER):
        await stub.CreateCollection(pb.CreateCollectionRequest(name=name))
    await stub.AddImages(pb.AddImagesRequest(collection=VICTIM, images=[
        pb.NewImage(id=f"{VICTIM_PREFIX}{n}", data=d,
                    metadata={"label": pb.MetadataValue(string_value="secret")})
        for n, (_, d, _) in enumerate(images)]))
    return server.port, images[0][1]


async def test_no_input_gets_internal_or_reaches_the_other_tenant(tenants):
    port, image = tenants

    def fuzz() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            before = snapshot(stub)

            @FUZZ
            @given(call=requests(image))
            def one(call: tuple[str, object]) -> None:
                method, request = call
                try:
                    response = getattr(stub, method)(request, timeout=30)
                except grpc.RpcError as err:
                    code, details = err.code(), err.details()
                else:
                    code, details = grpc.StatusCode.OK, "ok"
                assert code not in ACTIONABLE_ONLY, (method, request, details)
                assert details, (method, request)
                if code != grpc.StatusCode.OK:
                    return
                leaked = [i for i in returned_ids(response) if i.startswith(VICTIM_PREFIX)]
                assert not leaked, (method, request)
                if method == "ListCollections":
                    assert all(c.name in (VICTIM, FUZZER) or not c.name.startswith("~")
                               for c in response.collections)

            one()
            assert snapshot(stub) == before

    await asyncio.to_thread(fuzz)


async def test_filters_select_exactly_what_the_metadata_says(tenants):
    port, image = tenants
    collection = "fuzz-filters"

    def fuzz() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            stub.CreateCollection(pb.CreateCollectionRequest(name=collection))
            dimension = stub.GetCollection(pb.GetCollectionRequest(
                name=collection)).collection.model.dimension

            @settings(max_examples=40, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])
            @given(tags=st.lists(st.text(max_size=12).filter(
                lambda s: s.isprintable()), min_size=1, max_size=6),
                   scores=st.lists(st.integers(-5, 5) | st.floats(-5, 5), min_size=6,
                                   max_size=6))
            def one(tags: list[str], scores: list[float]) -> None:
                rows = {f"r{n}": (tags[n % len(tags)], scores[n]) for n in range(6)}
                stub.DeleteImages(pb.DeleteImagesRequest(collection=collection,
                                                         ids=list(rows)))
                response = stub.AddImages(pb.AddImagesRequest(collection=collection, images=[
                    pb.NewImage(id=i, data=image, metadata={
                        "tag": pb.MetadataValue(string_value=tag),
                        "score": pb.MetadataValue(double_value=float(score))})
                    for i, (tag, score) in rows.items()]))
                assert all(r.code == 0 for r in response.results)
                probe = pb.Query(vector=pb.Vector(values=np.ones(dimension).tolist()))
                for tag in set(tags):
                    for op, want in ((pb.OPERATOR_EQUAL, lambda t, tag=tag: t == tag),
                                     (pb.OPERATOR_NOT_EQUAL, lambda t, tag=tag: t != tag)):
                        hits = stub.Search(pb.SearchRequest(
                            collection=collection, top_k=100, queries=[probe], filter=[
                                pb.Condition(key="tag", operator=op, values=[
                                    pb.MetadataValue(string_value=tag)])])).results[0].hits
                        assert {h.id for h in hits} == {
                            i for i, (t, _) in rows.items() if want(t)}, (op, tag)
                threshold = scores[0]
                hits = stub.Search(pb.SearchRequest(
                    collection=collection, top_k=100, queries=[probe], filter=[pb.Condition(
                        key="score", operator=pb.OPERATOR_GREATER_OR_EQUAL,
                        values=[pb.MetadataValue(double_value=float(threshold))])]))
                assert {h.id for h in hits.results[0].hits} == {
                    i for i, (_, s) in rows.items()
                    if float(s) >= float(threshold) and not math.isnan(float(s))}

            one()

    await asyncio.to_thread(fuzz)
