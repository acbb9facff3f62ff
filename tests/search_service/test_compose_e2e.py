"""Compound queries and relevance feedback end to end: the real search service and embedder
(the bundled model), on Milvus Lite and on a Milvus server, through gRPC and HTTP/JSON."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
import pytest_asyncio

from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from search_service.server import SearchServer
from tests.search_fixtures import add, scene_images, search_settings

COLLECTION = "compound"
INVALID, NOT_FOUND = (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                      grpc.StatusCode.NOT_FOUND.value[0])


@pytest_asyncio.fixture(scope="module")
async def scenes(search) -> dict[str, synthetic.Scene]:
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION))
    items = scene_images(240, seed=11)
    for start in range(0, len(items), 60):
        response = await add(stub, COLLECTION, items[start:start + 60])
        assert all(r.code == 0 for r in response.results)
    return {i: s for i, _, s in items}


def part(weight: float | None = None, **kind: Any) -> pb.QueryPart:
    made = pb.QueryPart(**kind)
    if weight is not None:
        made.weight = weight
    return made


def compound(*parts: pb.QueryPart, **fields: Any) -> pb.Query:
    return pb.Query(compound=pb.CompoundQuery(parts=parts), **fields)


async def ask(stub, *queries: pb.Query, top_k: int = 10) -> list[pb.QueryResult]:
    response = await stub.Search(pb.SearchRequest(collection=COLLECTION, queries=queries,
                                                  top_k=top_k))
    return list(response.results)


async def test_subtracting_one_colour_word_and_adding_another_swaps_the_colour(search, scenes):
    _, stub = search
    plain, swapped = await ask(stub, pb.Query(text="a red circle"), compound(
        part(text="a red circle"), part(-1.0, text="red"), part(text="blue")))
    assert swapped.status.code == 0
    blue = [scenes[h.id].colour == "blue" for h in swapped.hits]
    assert sum(blue) >= 8, [(scenes[h.id].colour, scenes[h.id].shape) for h in swapped.hits]
    assert sum(scenes[h.id].colour == "blue" for h in plain.hits) <= 2


async def test_hits_are_ranked_by_the_documented_sum_of_stored_vectors(search, scenes):
    _, stub = search
    stored = await stub.GetImages(pb.GetImagesRequest(collection=COLLECTION, ids=list(scenes),
                                                      include_vectors=True))
    vectors = {i.id: np.asarray(i.vector, dtype=np.float64) for i in stored.images}
    first, second, third = list(scenes)[:3]
    (result,) = await ask(stub, compound(part(image_id=first), part(0.5, image_id=second),
                                         part(-0.25, image_id=third)), top_k=5)
    total = vectors[first] + 0.5 * vectors[second] - 0.25 * vectors[third]
    total /= np.linalg.norm(total)
    wanted = sorted(vectors, key=lambda i: -float(np.dot(total, vectors[i])))[:5]
    assert [h.id for h in result.hits] == wanted
    for hit in result.hits:
        assert hit.similarity == pytest.approx(float(np.dot(total, vectors[hit.id])), abs=1e-3)


async def test_bad_compound_queries_fail_alone_with_their_part_named(search, scenes):
    _, stub = search
    results = await ask(
        stub, compound(part(text="a beach"), part(-1.0, text="a beach")),
        compound(part(text="red"), part(image_id="no-such-image"), part(2.0, image=b"junk")),
        compound(*[part(text="x")] * 17), compound(part(0.0, text="x")),
        compound(part(text="a star"), part(1e9, text="x")), compound(),
        compound(part(text="a blue star")))
    (cancelled, broken, many, zero, heavy, empty, good) = results
    assert (cancelled.status.code, cancelled.status.message[:74]) == (
        INVALID, "the parts cancel out: their weighted sum has length 0, under 0.01 of their")
    assert broken.status.code == NOT_FOUND
    assert broken.status.message == (
        f"part 2 (image_id): image 'no-such-image' is not in collection '{COLLECTION}'; "
        "part 3 (image): bytes are not an image in a supported format (JPEG, PNG, WebP, GIF, "
        "BMP, TIFF)")
    assert many.status.message == "compound query has 17 parts; give 1 to 16"
    assert zero.status.message == ("part 1: weight 0.0 is invalid: give a non-zero number in "
                                   "[-100, 100]")
    assert heavy.status.message == ("part 2: weight 1000000000.0 is invalid: give a non-zero "
                                    "number in [-100, 100]")
    assert empty.status.message == "compound query has 0 parts; give 1 to 16"
    assert all(r.status.code == INVALID for r in (many, zero, heavy, empty))
    assert good.status.code == 0 and scenes[good.hits[0].id].colour == "blue"


async def test_one_round_of_feedback_raises_precision_and_leaves_negatives_out(search, scenes):
    """Per class of the collection, "a <colour> <shape>"; its first page judged (right: the
    class), then searched again with those judgements. Precision at 10 must rise on average,
    and no negative example may come back."""
    _, stub = search
    classes = sorted({(s.colour, s.shape) for s in scenes.values()})
    first = await _pages(stub, [pb.Query(text=f"a {c} {s}") for c, s in classes])
    judged = [([h.id for h in r.hits if (scenes[h.id].colour, scenes[h.id].shape) == c],
               [h.id for h in r.hits if (scenes[h.id].colour, scenes[h.id].shape) != c])
              for c, r in zip(classes, first, strict=True)]
    refined = await _pages(stub, [pb.Query(text=f"a {c} {s}", feedback=pb.Feedback(
        positive_ids=right, negative_ids=wrong)) for (c, s), (right, wrong) in zip(
            classes, judged, strict=True)])
    before = after = 0
    for cls, (right, wrong), result in zip(classes, judged, refined, strict=True):
        ids = [h.id for h in result.hits]
        assert result.status.code == 0 and len(ids) == 10 and not set(ids) & set(wrong)
        before += len(right)
        after += sum((scenes[i].colour, scenes[i].shape) == cls for i in ids)
    assert after > before * 1.1, (before, after)


async def _pages(stub, queries: list[pb.Query]) -> list[pb.QueryResult]:
    out: list[pb.QueryResult] = []
    for start in range(0, len(queries), 64):
        out += await ask(stub, *queries[start:start + 64])
    return out


async def test_feedback_errors_name_every_unknown_example(search, scenes):
    _, stub = search
    known = next(iter(scenes))
    missing, both, weight = await ask(
        stub, pb.Query(text="x", feedback=pb.Feedback(positive_ids=[known, "ghost"],
                                                       negative_ids=["it's 'gone'"])),
        pb.Query(text="x", feedback=pb.Feedback(positive_ids=[known], negative_ids=[known])),
        pb.Query(text="x", feedback=pb.Feedback(negative_weight=11)))
    assert (missing.status.code, missing.status.message) == (
        NOT_FOUND, f"feedback examples are not in collection '{COLLECTION}': 'ghost', "
                   "\"it's 'gone'\"")
    assert (both.status.code, both.status.message) == (
        INVALID, f"feedback gives {known!r} both as a positive and as a negative example")
    assert (weight.status.code, weight.status.message) == (
        INVALID, "feedback negative_weight must be in [0, 10]; got 11.0")


async def test_duplicates_of_a_compound_query_are_similar_and_exclude_its_images(search,
                                                                                 scenes):
    _, stub = search
    a, b = list(scenes)[:2]
    found = await stub.FindDuplicates(pb.FindDuplicatesRequest(
        collection=COLLECTION, query=compound(part(image_id=a), part(0.5, image_id=b)),
        min_similarity=-1, max_results=20))
    assert found.mode == pb.DUPLICATE_MODE_SIMILAR and len(found.duplicates) == 20
    assert not {a, b} & {h.id for h in found.duplicates}
    for query, mode, details in [
        (compound(part(image_id=a)), pb.DUPLICATE_MODE_COPIES,
         "DUPLICATE_MODE_COPIES verifies copies of one picture, and a compound query is a sum "
         "of several: ask for DUPLICATE_MODE_SIMILAR, or leave mode unset"),
        (compound(part(image_id=a), part(-1.0, text="red")), pb.DUPLICATE_MODE_SIMILAR,
         "FindDuplicates takes image and image_id parts only; part 2 is a text"),
        (compound(part(image_id=a), part(image_id="nope")), pb.DUPLICATE_MODE_UNSPECIFIED,
         f"part 2 (image_id): image 'nope' is not in collection '{COLLECTION}'"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.FindDuplicates(pb.FindDuplicatesRequest(collection=COLLECTION,
                                                               query=query, mode=mode))
        assert caught.value.details() == details
        assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                       grpc.StatusCode.NOT_FOUND)


async def test_classify_labels_a_compound_of_one_class_as_that_class(search, scenes):
    _, stub = search
    members = [i for i, s in scenes.items() if (s.colour, s.shape) == ("blue", "circle")]
    response = await stub.Classify(pb.ClassifyRequest(
        collection=COLLECTION, label_key="shape", k=5, queries=[
            compound(*[part(image_id=i) for i in members[:3]], part(-0.3, text="red")),
            pb.Query(image_id=members[0], feedback=pb.Feedback(positive_ids=members[1:2]))]))
    labelled, refused = response.results
    assert labelled.labels[0].label == "circle" and labelled.status.code == 0
    assert refused.status.code == INVALID and refused.status.message.startswith(
        "feedback refines Search queries only")


async def test_compound_queries_and_feedback_travel_as_json(embedder_server, tmp_path):
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          http_port=0))
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as http:
            await (await http.post("/v1/collections", json={"name": "json"})).json()
            items = scene_images(8, seed=3)
            await (await http.post("/v1/collections/json/images", json={"images": [
                {"id": i, "data": base64.b64encode(d).decode()} for i, d, _ in items]})).json()
            reply = await http.post("/v1/collections/json:search", json={"topK": 8, "queries": [
                {"compound": {"parts": [{"text": "a star"}, {"imageId": items[0][0]},
                                        {"text": "red", "weight": -0.5}]},
                 "feedback": {"positiveIds": [items[1][0]], "negativeIds": [items[2][0]],
                              "queryWeight": 0.5}},
                {"compound": {"parts": [{"text": "a"}, {"text": "a", "weight": -1}]}}]})
            body = await reply.json()
    finally:
        await server.stop(grace=0)
    refined, cancelled = body["results"]
    assert reply.status == 200 and len(refined["hits"]) == 7  # the negative left out
    assert items[2][0] not in {h["id"] for h in refined["hits"]}
    assert cancelled["status"]["code"] == INVALID
    assert cancelled["status"]["message"].startswith("the parts cancel out")


async def test_the_adaptive_cutoffs_keep_a_prefix_of_the_plain_hits(search, scenes):
    _, stub = search
    queries = [pb.Query(text="a blue circle"), compound(part(text="a star"),
                                                        part(-0.5, text="red"))]
    plain, gap, z = [await stub.Search(pb.SearchRequest(
        collection=COLLECTION, queries=queries, top_k=50, cutoff=cutoff))
        for cutoff in (pb.CUTOFF_NONE, pb.CUTOFF_LARGEST_GAP, pb.CUTOFF_Z_SCORE)]
    for whole, kept in [*zip(plain.results, gap.results, strict=True),
                        *zip(plain.results, z.results, strict=True)]:
        ids = [h.id for h in kept.hits]
        assert 1 <= len(ids) < 50 and ids == [h.id for h in whole.hits][:len(ids)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Search(pb.SearchRequest(collection=COLLECTION, queries=queries, cutoff=7))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == ("cutoff 7 is not a Cutoff (NONE 1, LARGEST_GAP 2, "
                                      "Z_SCORE 3)")
