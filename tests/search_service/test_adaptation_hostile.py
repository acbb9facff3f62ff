"""Hostile probes of the learned query adaptation, on Milvus Lite and on a Milvus server:
tenants against each other, bad inputs, a fit racing its collection's delete, a reset racing
a fit."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from imagesearch.search.v1 import search_pb2 as pb
from tests.search_service.test_adaptation_e2e import fitted, judged_collection, scores

A, B = "adapt-a", "adapt-b"
TEXT = pb.Query(text="a picture number 3")


@pytest_asyncio.fixture(scope="module")
async def tenants(search):
    _, stub = search
    for name in (A, B):
        await judged_collection(stub, name)
    return stub


async def test_one_tenants_map_never_reaches_another(tenants):
    stub = tenants
    plain_b = await scores(stub, B, TEXT)
    await stub.FitAdaptation(pb.FitAdaptationRequest(collection=A))
    assert (await fitted(stub, A)).version == 1
    await stub.SetAdaptationEnabled(pb.SetAdaptationEnabledRequest(collection=A, enabled=True))
    assert await scores(stub, A, TEXT) != await scores(stub, B, TEXT)
    assert await scores(stub, B, TEXT) == plain_b
    b = (await stub.GetAdaptation(pb.GetAdaptationRequest(collection=B))).adaptation
    assert (b.version, b.fit_state) == (0, pb.FIT_STATE_NONE)
    await stub.ResetAdaptation(pb.ResetAdaptationRequest(collection=B))
    a = (await stub.GetAdaptation(pb.GetAdaptationRequest(collection=A))).adaptation
    assert (a.version, a.enabled) == (1, True)
    await stub.ResetAdaptation(pb.ResetAdaptationRequest(collection=A))


@pytest.mark.parametrize(("call", "code", "details"), [
    ("FitAdaptation", grpc.StatusCode.INVALID_ARGUMENT,
     "collection name '' is invalid: use 1-63 characters from a-z, 0-9, '_' and '-', "
     "starting with a letter or digit"),
    ("GetAdaptation", grpc.StatusCode.NOT_FOUND, "collection 'nowhere' does not exist"),
    ("ResetAdaptation", grpc.StatusCode.NOT_FOUND, "collection 'nowhere' does not exist"),
    ("SetAdaptationEnabled", grpc.StatusCode.INVALID_ARGUMENT,
     "collection name 'bad/name' is invalid: use 1-63 characters"),
])
async def test_bad_collections_are_refused_with_the_right_status(tenants, call, code, details):
    stub = tenants
    name = {"FitAdaptation": "", "SetAdaptationEnabled": "bad/name"}.get(call, "nowhere")
    request = getattr(pb, f"{call}Request")(collection=name)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(stub, call)(request)
    assert refused.value.code() == code
    assert refused.value.details().startswith(details), refused.value.details()


async def test_a_fit_racing_its_collections_delete_leaves_nothing_behind(tenants):
    stub = tenants
    await judged_collection(stub, "doomed")
    await stub.FitAdaptation(pb.FitAdaptationRequest(collection="doomed", enable=True))
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name="doomed"))
    await asyncio.sleep(1.0)  # the fit (under a second here) ends against a deleted record
    await stub.CreateCollection(pb.CreateCollectionRequest(name="doomed"))
    again = (await stub.GetAdaptation(pb.GetAdaptationRequest(collection="doomed"))).adaptation
    assert (again.version, again.enabled, again.fit_state) == (0, False,
                                                               pb.FIT_STATE_NONE)
    empty = await stub.Search(pb.SearchRequest(collection="doomed", queries=[TEXT]))
    assert list(empty.results[0].hits) == []
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name="doomed"))


async def test_a_reset_during_a_fit_stops_it_and_keeps_no_map(tenants):
    stub = tenants
    await stub.FitAdaptation(pb.FitAdaptationRequest(collection=B, enable=True))
    await stub.ResetAdaptation(pb.ResetAdaptationRequest(collection=B))
    await asyncio.sleep(1.0)
    b = (await stub.GetAdaptation(pb.GetAdaptationRequest(collection=B))).adaptation
    assert (b.version, b.fit_state) == (0, pb.FIT_STATE_NONE)
