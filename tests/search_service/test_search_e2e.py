"""End to end: the real search service, the real embedder with the bundled model, and Milvus
Lite or a Milvus server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedder_service.server import EmbedderServer
from imagesearch import synthetic
from imagesearch.search.v1 import search_pb2 as pb
from imagesearch.search.v1 import search_pb2_grpc
from imagesearch.serving.grpc_server import LIVENESS
from search_service.domain import ModelSpace
from search_service.server import SearchServer
from tests.conftest import embedder_settings
from tests.milvus_server import MilvusServer, free_port
from tests.search_fixtures import add, scene_images, search_settings


@pytest_asyncio.fixture(scope="module")
async def shapes(search) -> tuple[str, list[tuple[str, bytes, synthetic.Scene]]]:
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="shapes", description="test"))
    items = scene_images(120, seed=5)
    for start in range(0, len(items), 40):
        response = await add(stub, "shapes", items[start:start + 40])
        assert all(r.code == 0 for r in response.results)
    return "shapes", items


async def test_collection_records_its_model(search, shapes, embedder_stub):
    from imagesearch.embedder.v1 import embedder_pb2

    _, stub = search
    info = (await embedder_stub.GetModelInfo(embedder_pb2.GetModelInfoRequest())).model
    collection = (await stub.GetCollection(pb.GetCollectionRequest(name="shapes"))).collection
    assert collection.model.fingerprint == info.fingerprint
    assert collection.model.dimension == info.embedding_dim
    assert collection.image_count == 120
    assert collection.create_time.seconds > 0


def describe(scene: synthetic.Scene) -> str:
    if scene.count > 1:
        words = {2: "two", 3: "three"}[scene.count]
        return f"{words} {scene.colour} {synthetic.plural(scene.shape)}"
    return f"{'an' if scene.colour[0] in 'aeiou' else 'a'} {scene.colour} {scene.shape}"


async def test_text_search_puts_matching_images_on_top(search, shapes):
    _, stub = search
    _, items = shapes
    scenes = {i: s for i, _, s in items}
    wanted = sorted({(s.colour, s.shape, s.count) for _, _, s in items})
    queries = [pb.Query(text=describe(synthetic.Scene(c, s, n, "large", "center", "white")))
               for c, s, n in wanted]
    results = []
    for start in range(0, len(queries), 64):
        response = await stub.Search(pb.SearchRequest(collection="shapes", top_k=3,
                                                      queries=queries[start:start + 64]))
        results += response.results
    top1 = top3 = 0
    for (colour, shape, _), result in zip(wanted, results, strict=True):
        matches = [(scenes[h.id].colour, scenes[h.id].shape) == (colour, shape)
                   for h in result.hits]
        top1 += matches[0]
        top3 += any(matches)
        assert result.hits[0].metadata["colour"].string_value == scenes[result.hits[0].id].colour
    assert top1 >= 0.9 * len(wanted), f"top-1 {top1}/{len(wanted)}"
    assert top3 == len(wanted), f"top-3 {top3}/{len(wanted)}"


async def test_image_search_finds_the_image_itself_first(search, shapes):
    _, stub = search
    _, items = shapes
    image_id, data, _ = items[17]
    response = await stub.Search(pb.SearchRequest(collection="shapes", top_k=5, queries=[
        pb.Query(image=data), pb.Query(image_id=image_id)]))
    for result in response.results:
        assert result.hits[0].id == image_id
        assert result.hits[0].similarity == pytest.approx(1.0, abs=1e-3)


async def test_vector_query_and_bad_queries_fail_only_themselves(search, shapes):
    _, stub = search
    _, items = shapes
    stored = await stub.GetImages(pb.GetImagesRequest(collection="shapes", ids=[items[3][0]],
                                                      include_vectors=True))
    vector = list(stored.images[0].vector)
    response = await stub.Search(pb.SearchRequest(collection="shapes", top_k=2, queries=[
        pb.Query(vector=pb.Vector(values=vector)), pb.Query(image=b"junk"),
        pb.Query(image_id="no-such-image"), pb.Query(vector=pb.Vector(values=[1.0, 2.0])),
        pb.Query()]))
    ok, junk, missing, short, empty = response.results
    assert ok.hits[0].id == items[3][0] and ok.status.code == 0
    assert junk.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and not junk.hits
    assert junk.status.message.startswith("bytes are not an image")
    assert missing.status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert missing.status.message == "image 'no-such-image' is not in collection 'shapes'"
    assert short.status.message == "vector has 2 values; the collection's dimension is 64"
    assert empty.status.message == "query is empty: set text, image, image_id, vector or compound"


async def test_filters_and_min_similarity(search, shapes):
    _, stub = search
    _, items = shapes
    reds = {i for i, _, s in items if s.colour == "red"}
    response = await stub.Search(pb.SearchRequest(
        collection="shapes", top_k=100, queries=[pb.Query(text="a shape")],
        filter=[pb.Condition(key="colour", operator=pb.OPERATOR_EQUAL,
                             values=[pb.MetadataValue(string_value="red")])]))
    assert {h.id for h in response.results[0].hits} == reds
    response = await stub.Search(pb.SearchRequest(
        collection="shapes", top_k=100, queries=[pb.Query(text="a shape")],
        filter=[pb.Condition(key="colour", operator=pb.OPERATOR_EQUAL, values=[
            pb.MetadataValue(string_value='red" or collection != "shapes')])]))
    assert list(response.results[0].hits) == []
    response = await stub.Search(pb.SearchRequest(
        collection="shapes", top_k=100, min_similarity=0.5, queries=[pb.Query(text="a shape")]))
    assert all(h.similarity >= 0.5 for h in response.results[0].hits)


async def test_bad_items_in_a_batch_fail_only_themselves(search):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="mixed"))
    good = scene_images(2, seed=9)
    response = await stub.AddImages(pb.AddImagesRequest(collection="mixed", images=[
        pb.NewImage(id="ok-1", data=good[0][1]), pb.NewImage(id="bad/id", data=good[1][1]),
        pb.NewImage(id="junk", data=b"not an image"), pb.NewImage(id="ok-1", data=good[1][1]),
        pb.NewImage(id="ok-2", data=good[1][1],
                    metadata={"9bad": pb.MetadataValue(string_value="x")})]))
    codes = [r.code for r in response.results]
    assert codes == [0, 3, 3, 3, 3]
    assert "no '/' and no control characters" in response.results[1].message
    assert response.results[2].message.startswith("bytes are not an image")
    assert response.results[3].message == "id 'ok-1' appears more than once in this request"
    assert response.results[4].message.startswith("metadata key '9bad' is invalid")
    collection = (await stub.GetCollection(pb.GetCollectionRequest(name="mixed"))).collection
    assert collection.image_count == 1


async def test_upsert_never_duplicates_and_delete_removes(search):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="upserts"))
    items = scene_images(5, seed=11)
    await add(stub, "upserts", items)
    await add(stub, "upserts", items[:3])
    count = lambda r: r.collection.image_count  # noqa: E731
    assert count(await stub.GetCollection(pb.GetCollectionRequest(name="upserts"))) == 5
    await stub.DeleteImages(pb.DeleteImagesRequest(collection="upserts", ids=["img-000"]))
    assert count(await stub.GetCollection(pb.GetCollectionRequest(name="upserts"))) == 4
    got = await stub.GetImages(pb.GetImagesRequest(collection="upserts",
                                                   ids=["img-000", "img-001"]))
    assert [i.id for i in got.images] == ["img-001"] and list(got.missing_ids) == ["img-000"]


async def test_pagination_walks_every_item_exactly_once(search, shapes):
    _, stub = search
    _, items = shapes
    seen, token = [], ""
    while True:
        page = await stub.ListImages(pb.ListImagesRequest(collection="shapes", page_size=17,
                                                          page_token=token))
        seen += [i.id for i in page.images]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(i for i, _, _ in items)


async def test_errors_carry_the_right_codes(search):
    _, stub = search
    cases = [
        (stub.GetCollection(pb.GetCollectionRequest(name="nope")), grpc.StatusCode.NOT_FOUND,
         "collection 'nope' does not exist"),
        (stub.CreateCollection(pb.CreateCollectionRequest(name="Bad Name")),
         grpc.StatusCode.INVALID_ARGUMENT, "collection name 'Bad Name' is invalid"),
        (stub.AddImages(pb.AddImagesRequest(collection="shapes")),
         grpc.StatusCode.INVALID_ARGUMENT, "request has no images; send 1 to 256"),
        (stub.ListImages(pb.ListImagesRequest(collection="shapes", page_token="garbage")),
         grpc.StatusCode.INVALID_ARGUMENT, "page_token is invalid"),
        (stub.Search(pb.SearchRequest(collection="shapes", queries=[pb.Query(text="x")],
                                      filter=[pb.Condition(key="colour")])),
         grpc.StatusCode.INVALID_ARGUMENT, "condition on 'colour' has no operator"),
    ]
    for call, code, details in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == code
        assert caught.value.details().startswith(details)
    await stub.CreateCollection(pb.CreateCollectionRequest(name="twice"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateCollection(pb.CreateCollectionRequest(name="twice"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_collection_of_another_model_is_refused(search):
    server, stub = search
    other = ModelSpace("sha256:" + "0" * 64, 64, "some-other-model")
    await server._store.create_collection("foreign", other, "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add(stub, "foreign", scene_images(1, seed=3))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details().startswith(
        "collection 'foreign' uses model some-other-model")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Search(pb.SearchRequest(collection="foreign", queries=[pb.Query(text="x")]))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_collections_list_in_pages(search, shapes):
    _, stub = search
    names, token = [], ""
    while True:
        page = await stub.ListCollections(pb.ListCollectionsRequest(page_size=2,
                                                                    page_token=token))
        names += [c.name for c in page.collections]
        if not (token := page.next_page_token):
            break
    assert names == sorted(names) and "shapes" in names


async def test_embedder_down_gives_unavailable_and_not_serving(milvus_backend):
    server = SearchServer(search_settings(milvus_backend.new_uri(), embedder_port=1))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateCollection(pb.CreateCollectionRequest(name="x"), timeout=20)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "the embedder is unavailable (UNAVAILABLE); retry shortly"
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Not ready, yet alive: Kubernetes must not restart a pod for its dependency's outage.
        reply = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await server.stop(grace=1)


async def test_restart_loses_nothing(milvus_backend, embedder_server):
    uri = milvus_backend.new_uri()
    for round_ in range(2):
        server = SearchServer(search_settings(uri, embedder_server.port))
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            if round_ == 0:
                await stub.CreateCollection(pb.CreateCollectionRequest(name="keep"))
                await add(stub, "keep", scene_images(6, seed=2))
            else:
                got = await stub.GetCollection(pb.GetCollectionRequest(name="keep"))
                assert got.collection.image_count == 6
                found = await stub.Search(pb.SearchRequest(
                    collection="keep", queries=[pb.Query(image_id="img-004")], top_k=1))
                assert found.results[0].hits[0].id == "img-004"
        await server.stop(grace=1)


async def wait_health(channel: grpc.aio.Channel, serving: bool, timeout_s: float) -> None:
    want = (health_pb2.HealthCheckResponse.SERVING if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await health.Check(health_pb2.HealthCheckRequest(service=""))).status != want:
        assert asyncio.get_running_loop().time() < deadline, f"health never became {want}"
        await asyncio.sleep(0.2)


class LateMilvus:
    """A port that refuses connections until opened, then forwards them to the real server:
    a Milvus that comes up after the search service, without restarting one."""

    def __init__(self, target_port: int) -> None:
        self.port, self._target = free_port(), target_port
        self._listener: asyncio.Server | None = None

    async def open(self) -> None:
        self._listener = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_search_started_before_milvus_serves_once_milvus_is_up(milvus_backend,
                                                                     embedder_server):
    if milvus_backend.server is None:
        pytest.skip("Milvus Lite is a file the service opens itself; there is nothing to wait for")
    late = LateMilvus(milvus_backend.server.port)
    uri = milvus_backend.new_uri().replace(f":{milvus_backend.server.port}/", f":{late.port}/")
    server = SearchServer(search_settings(uri, embedder_server.port))
    await server.start()  # no crash: Kubernetes would otherwise restart it in a back-off loop
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetCollection(pb.GetCollectionRequest(name="any"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == "Milvus is not connected yet; retry shortly"
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await wait_health(channel, serving=False, timeout_s=5)
            await late.open()
            await wait_health(channel, serving=True, timeout_s=30)
            created = await stub.CreateCollection(pb.CreateCollectionRequest(name="late"))
            assert created.collection.name == "late"
    finally:
        await server.stop(grace=1)
        await late.close()


async def test_a_misconfigured_milvus_fails_start_up_and_frees_the_port(embedder_server,
                                                                         tmp_path):
    # Not a connection failure (a Milvus Lite path under a regular file): retrying would only
    # hide it, so start-up fails, as a crash-looping pod shows it.
    (tmp_path / "a-file").write_text("")
    settings = search_settings(str(tmp_path / "a-file" / "search.db"), embedder_server.port,
                               port=free_port())
    with pytest.raises(FileExistsError):
        await SearchServer(settings).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", settings.port))


@pytest.fixture
def own_milvus_server(milvus_backend, tmp_path) -> Iterator[MilvusServer]:
    """A Milvus server of this test's own, to stop and start again. A restarted server loads
    every collection it holds before it answers: the shared one holds hundreds by then, and
    took more than a minute on CI, which says nothing about the search service."""
    if milvus_backend.server is None:
        pytest.skip("Milvus Lite runs inside the service; it cannot go down on its own")
    server = MilvusServer(tmp_path / "milvus")
    server.start()
    yield server
    server.stop()


async def test_milvus_down_gives_unavailable_and_its_restart_loses_nothing(own_milvus_server,
                                                                          embedder_server):
    milvus = own_milvus_server
    server = SearchServer(search_settings(milvus.uri, embedder_server.port))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="kept"))
            await add(stub, "kept", scene_images(6, seed=2))
            await asyncio.to_thread(milvus.stop)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetCollection(pb.GetCollectionRequest(name="kept"), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == "Milvus is unavailable; retry shortly"
            await wait_health(channel, serving=False, timeout_s=30)
            await asyncio.to_thread(milvus.start)
            await wait_health(channel, serving=True, timeout_s=60)
            got = await stub.GetCollection(pb.GetCollectionRequest(name="kept"))
            assert got.collection.image_count == 6
            found = await stub.Search(pb.SearchRequest(
                collection="kept", queries=[pb.Query(image_id="img-004")], top_k=1))
            assert found.results[0].hits[0].id == "img-004"
    finally:
        await server.stop(grace=1)


async def test_a_hung_milvus_fails_calls_at_the_milvus_timeout_and_recovers(milvus_backend,
                                                                           embedder_server):
    if milvus_backend.server is None:
        pytest.skip("Milvus Lite runs inside the service; it cannot hang on its own")
    server = SearchServer(search_settings(milvus_backend.new_uri(), embedder_server.port,
                                          milvus_timeout_s=1.0, store_threads=2))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            await stub.CreateCollection(pb.CreateCollectionRequest(name="hung"))
            await wait_health(channel, serving=True, timeout_s=10)
            milvus_backend.server.freeze()
            try:
                # More calls than store threads: none holds a thread beyond the timeout.
                started = asyncio.get_running_loop().time()
                outcomes = await asyncio.gather(*(
                    stub.GetCollection(pb.GetCollectionRequest(name="hung"), timeout=20)
                    for _ in range(6)), return_exceptions=True)
                elapsed = asyncio.get_running_loop().time() - started
                for outcome in outcomes:
                    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
                    assert outcome.code() == grpc.StatusCode.UNAVAILABLE
                    assert outcome.details() == "Milvus did not answer within 1 s; retry shortly"
                # Three rounds of two threads, 1 s each: not at the callers' 20 s deadline.
                assert elapsed < 10, elapsed
                await wait_health(channel, serving=False, timeout_s=10)
            finally:
                milvus_backend.server.thaw()
            await wait_health(channel, serving=True, timeout_s=30)
            got = await stub.GetCollection(pb.GetCollectionRequest(name="hung"), timeout=20)
            assert got.collection.name == "hung"
    finally:
        await server.stop(grace=1)


async def ingest_all(stub, collection: str, items) -> list[pb.IngestImagesResponse]:
    async def requests():
        for image_id, data, _ in items:
            yield pb.IngestImagesRequest(collection=collection,
                                         image=pb.NewImage(id=image_id, data=data))

    return [ack async for ack in stub.IngestImages(requests(), timeout=60)]


async def test_ingest_retried_after_the_embedder_was_down_loses_and_doubles_nothing(
        milvus_backend):
    embedder = EmbedderServer(embedder_settings())
    port = await embedder.start()
    server = SearchServer(search_settings(milvus_backend.new_uri(), port,
                                          embedder_timeout_s=1.0))
    await server.start()
    items = scene_images(30, seed=21)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        await stub.CreateCollection(pb.CreateCollectionRequest(name="retry"))
        assert all(a.status.code == 0 for a in await ingest_all(stub, "retry", items[:12]))
        await embedder.stop(grace=0)
        # A dependency down is not one item's fault: the stream ends, retryably.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest_all(stub, "retry", items)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "the embedder is unavailable (UNAVAILABLE); retry shortly"
        embedder = EmbedderServer(embedder_settings(port=port))
        await embedder.start()
        # The caller's retry: the whole batch again, ids it had already stored included.
        assert all(a.status.code == 0 for a in await ingest_all(stub, "retry", items))
        listed = await stub.ListImages(pb.ListImagesRequest(collection="retry", page_size=100))
        assert [image.id for image in listed.images] == [i for i, _, _ in items]
        got = await stub.GetCollection(pb.GetCollectionRequest(name="retry"))
        assert got.collection.image_count == 30
    await server.stop(grace=1)
    await embedder.stop(grace=1)


async def test_ingest_stream_acknowledges_every_image_in_order(search):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="bulk"))
    items = scene_images(150, seed=13)

    async def requests():
        for index, (image_id, data, _) in enumerate(items):
            target = "shapes" if index == 90 else "bulk"
            yield pb.IngestImagesRequest(collection=target, image=pb.NewImage(
                id=image_id, data=b"junk" if index == 40 else data))

    acks = [r async for r in stub.IngestImages(requests())]
    assert [a.index for a in acks] == list(range(150))
    assert [a.id for a in acks] == [i for i, _, _ in items]
    failed = {a.index: a.status.message for a in acks if a.status.code != 0}
    assert set(failed) == {40, 90}
    assert failed[40].startswith("bytes are not an image")
    assert failed[90] == "all images of one stream must go to the same collection"
    got = await stub.GetCollection(pb.GetCollectionRequest(name="bulk"))
    assert got.collection.image_count == 148


async def test_ingest_client_waiting_for_each_ack_still_progresses(search):
    _, stub = search
    await stub.CreateCollection(pb.CreateCollectionRequest(name="lockstep"))
    items = scene_images(5, seed=14)
    call = stub.IngestImages()
    for image_id, data, _ in items:
        await call.write(pb.IngestImagesRequest(collection="lockstep",
                                                image=pb.NewImage(id=image_id, data=data)))
        ack = await asyncio.wait_for(call.read(), timeout=10)
        assert (ack.id, ack.status.code) == (image_id, 0)
    # Waiting for each ack makes every image a batch of its own; one for another collection
    # is still refused: the stream's collection is its first image's.
    await stub.CreateCollection(pb.CreateCollectionRequest(name="lockstep-other"))
    await call.write(pb.IngestImagesRequest(collection="lockstep-other",
                                            image=pb.NewImage(id="x", data=items[0][1])))
    ack = await asyncio.wait_for(call.read(), timeout=10)
    assert ack.status.message == "all images of one stream must go to the same collection"
    await call.done_writing()
    got = await stub.GetCollection(pb.GetCollectionRequest(name="lockstep"))
    assert got.collection.image_count == 5


async def test_ingest_into_a_missing_collection_fails_the_stream(search):
    _, stub = search

    async def requests():
        yield pb.IngestImagesRequest(collection="nowhere", image=pb.NewImage(id="a", data=b"x"))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [r async for r in stub.IngestImages(requests())]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "collection 'nowhere' does not exist"
