"""Scoped tokens on the search service: each token reaches exactly the collections and levels
its scopes give it, through every RPC, and nothing tells it about the others."""

from __future__ import annotations

import itertools

import grpc
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from imagesearch.serving.auth import Grant, Level, Scope, load_grants, parse_grant
from search_service.server import SERVICE, SearchServer
from search_service.transports.grpc_servicer import SearchServicer
from tests.search_fixtures import scene_images, search_settings

GRANTS = {
    "root": "",
    "reader": "read:shop-*",
    "writer": "write:shop-eu read:lab",
    "admin": "admin:shop-eu",
}
COLLECTIONS = ("shop-eu", "shop-us", "lab")


def test_a_grant_is_a_token_and_its_scopes():
    grant = parse_grant("k3y read:shop-* write:shop-eu admin:lab")
    assert grant == Grant("k3y", (Scope(Level.READ, "shop-*"), Scope(Level.WRITE, "shop-eu"),
                                  Scope(Level.ADMIN, "lab")))
    assert grant.allows(Level.READ, "shop-us")
    assert not grant.allows(Level.WRITE, "shop-us")
    assert grant.allows(Level.WRITE, "shop-eu") and grant.allows(Level.READ, "shop-eu")
    assert not grant.allows(Level.ADMIN, "shop-eu")
    assert grant.allows(Level.ADMIN, "lab") and grant.allows(Level.READ, "lab")
    assert not grant.allows(Level.READ, "la") and not grant.allows(Level.READ, "labs")
    assert parse_grant("plain").unrestricted


@pytest.mark.parametrize(("line", "message"), [
    ("k read", "is not LEVEL:PATTERN"),
    ("k peek:a", "is not LEVEL:PATTERN"),
    ("k read:", "is not LEVEL:PATTERN"),
    ("k read:a*b", "'*' may only end a pattern"),
])
def test_malformed_scopes_are_refused_at_start_up(line, message):
    with pytest.raises(ValueError, match=message):
        parse_grant(line)


def test_a_token_configured_twice_is_refused(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("same read:a\n# comment\nsame write:b\n")
    with pytest.raises(ValueError, match="configured twice"):
        load_grants(None, path)


def test_the_embedder_refuses_scopes_it_cannot_check():
    from embedder_service.settings import EmbedderSettings

    with pytest.raises(ValueError, match="its tokens take no scopes"):
        EmbedderSettings(auth_tokens="k read:a").grants()


def test_every_rpc_declares_the_access_it_needs():
    undeclared = [m.name for m in SERVICE.methods
                  if not hasattr(getattr(SearchServicer, m.name), "access")]
    assert undeclared == []


@given(scopes=st.lists(st.tuples(st.sampled_from(list(Level)),
                                 st.text("ab-", min_size=1, max_size=4),
                                 st.booleans()), max_size=4),
       level=st.sampled_from(list(Level)), name=st.text("ab-", min_size=1, max_size=5))
@settings(max_examples=500, deadline=None)
def test_a_grant_allows_exactly_what_some_scope_covers(scopes, level, name):
    line = " ".join(["t", *(f"{lvl.name.lower()}:{p}{'*' if prefix else ''}"
                            for lvl, p, prefix in scopes)])
    expected = not scopes or any(
        level <= lvl and (name.startswith(p) if prefix else name == p)
        for lvl, p, prefix in scopes)
    assert parse_grant(line).allows(level, name) == expected


@pytest_asyncio.fixture(scope="module")
async def scoped(tmp_path_factory, embedder_server):
    tokens = tmp_path_factory.mktemp("scopes") / "tokens"
    tokens.write_text("".join(f"{name} {scopes}\n" for name, scopes in GRANTS.items()))
    db = tmp_path_factory.mktemp("scoped") / "scoped.db"
    server = SearchServer(search_settings(db, embedder_server.port, auth_tokens_file=tokens))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = search_pb2_grpc.SearchServiceStub(channel)
    root = (("authorization", "Bearer root"),)
    (image,) = scene_images(1, seed=41)
    for name in COLLECTIONS:
        await stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=root)
        await stub.AddImages(pb.AddImagesRequest(collection=name, images=[
            pb.NewImage(id="seed", data=image[1])]), metadata=root)
    yield stub, image[1]
    await channel.close()
    await server.stop(grace=1)


def calls(collection: str, data: bytes) -> dict[str, tuple[Level, object]]:
    """One request per RPC that names a collection, and the level it needs."""
    query = pb.Query(image_id="seed")
    return {
        "GetCollection": (Level.READ, pb.GetCollectionRequest(name=collection)),
        "GetImages": (Level.READ, pb.GetImagesRequest(collection=collection, ids=["seed"])),
        "ListImages": (Level.READ, pb.ListImagesRequest(collection=collection)),
        "Search": (Level.READ, pb.SearchRequest(collection=collection, queries=[query])),
        "FindDuplicates": (Level.READ, pb.FindDuplicatesRequest(collection=collection,
                                                                query=query)),
        "FindDuplicateGroups": (Level.READ, pb.FindDuplicateGroupsRequest(
            collection=collection)),
        "Classify": (Level.READ, pb.ClassifyRequest(collection=collection, label_key="label",
                                                    queries=[query])),
        "AddImages": (Level.WRITE, pb.AddImagesRequest(collection=collection, images=[
            pb.NewImage(id="added", data=data)])),
        "DeleteImages": (Level.WRITE, pb.DeleteImagesRequest(collection=collection,
                                                             ids=["added"])),
        "GetAdaptation": (Level.READ, pb.GetAdaptationRequest(collection=collection)),
        # Refused for too little feedback (FAILED_PRECONDITION) where the token may fit.
        "FitAdaptation": (Level.WRITE, pb.FitAdaptationRequest(collection=collection)),
        "SetAdaptationEnabled": (Level.WRITE, pb.SetAdaptationEnabledRequest(
            collection=collection, enabled=False)),
        "ResetAdaptation": (Level.WRITE, pb.ResetAdaptationRequest(collection=collection)),
        "CreateCollection": (Level.ADMIN, pb.CreateCollectionRequest(name=collection)),
        "EvaluateModels": (Level.WRITE, pb.EvaluateModelsRequest(collection=collection,
                                                                 label_key="label")),
        "GetMigration": (Level.READ, pb.GetMigrationRequest(collection=collection)),
        **{name: (Level.ADMIN, getattr(pb, f"{name}Request")(collection=collection))
           for name in ("StartMigration", "PauseMigration", "ResumeMigration",
                        "CancelMigration", "SwitchMigration", "RollbackMigration",
                        "FinishMigration")},
    }


@pytest.mark.parametrize(("token", "collection"),
                         list(itertools.product(GRANTS, COLLECTIONS)))
async def test_each_token_reaches_exactly_what_its_scopes_give(scoped, token, collection):
    stub, data = scoped
    grant = parse_grant(f"{token} {GRANTS[token]}")
    metadata = (("authorization", f"Bearer {token}"),)
    for method, (level, request) in calls(collection, data).items():
        try:
            await getattr(stub, method)(request, metadata=metadata)
            code, details = grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as err:
            code, details = err.code(), err.details()
        denied = code == grpc.StatusCode.PERMISSION_DENIED
        assert denied != grant.allows(level, collection), (token, method, collection)
        if denied:
            assert details.startswith("this token may not ") and repr(collection) in details


async def test_listing_shows_only_what_the_token_may_read(scoped):
    stub, _ = scoped
    for token in GRANTS:
        grant = parse_grant(f"{token} {GRANTS[token]}")
        listed = await stub.ListCollections(pb.ListCollectionsRequest(),
                                            metadata=(("authorization", f"Bearer {token}"),))
        assert sorted(c.name for c in listed.collections) == sorted(
            c for c in COLLECTIONS if grant.allows(Level.READ, c))


async def test_a_forbidden_collection_cannot_be_deleted_or_streamed_into(scoped):
    stub, data = scoped
    reader = (("authorization", "Bearer reader"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteCollection(pb.DeleteCollectionRequest(name="shop-us"), metadata=reader)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "this token may not manage collection 'shop-us'"
    writer = (("authorization", "Bearer writer"),)

    async def requests():
        for collection in ("shop-eu", "shop-us"):
            yield pb.IngestImagesRequest(collection=collection, image=pb.NewImage(
                id="streamed", data=data))

    async def stream() -> list[pb.IngestImagesResponse]:
        return [ack async for ack in stub.IngestImages(requests(), metadata=writer)]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "this token may not write to collection 'shop-us'"
    root = (("authorization", "Bearer root"),)
    found = await stub.GetImages(pb.GetImagesRequest(collection="shop-us", ids=["streamed"]),
                                 metadata=root)
    assert list(found.images) == []
    assert (await stub.GetCollection(pb.GetCollectionRequest(name="shop-us"),
                                     metadata=root)).collection.image_count == 1
