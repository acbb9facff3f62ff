"""The Python client against the real services: streaming ingest with progress, get, list,
delete; and the resume logic of the ingest stream."""

from __future__ import annotations

import asyncio
import time

import pytest

from imagesearch.client import IngestIncomplete, SearchClient
from imagesearch.ingest_stream import Source, Stream
from imagesearch.search.v1 import search_pb2 as pb
from search_service.server import SearchServer
from tests.search_fixtures import labels, scene_images, search_settings


def plain_labels(scene) -> dict[str, object]:
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in labels(scene).items()}


async def test_ingest_streams_lazily_reports_each_image_and_fails_only_bad_ones(search):
    server, _ = search
    images = scene_images(20, seed=31)
    acks: list[tuple[str, str | None]] = []

    def items():
        for index, (image_id, data, scene) in enumerate(images):
            yield image_id, b"not an image" if index == 7 else data, plain_labels(scene)

    def work() -> tuple[list, list[str], list]:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.create_collection("client-ingest")
            failed = client.ingest("client-ingest", items(),
                                   lambda i, e: acks.append((i, e and e.code)))
            listed = [image.id for image in client.list_images("client-ingest", page_size=6)]
            client.delete_images("client-ingest", ["img-000", "img-001"])
            got = client.get_images("client-ingest", ["img-000", "img-002", "img-007"])
            return failed, listed, got

    failed, listed, got = await asyncio.to_thread(work)
    assert [(f.id, f.code) for f in failed] == [("img-007", "INVALID_ARGUMENT")]
    assert failed[0].message.startswith("bytes are not an image")
    assert acks == [(i, "INVALID_ARGUMENT" if i == "img-007" else None) for i, _, _ in images]
    assert listed == [i for i, _, _ in images if i != "img-007"]
    assert [image.id for image in got] == ["img-002"]
    assert got[0].metadata["colour"].string_value == images[2][2].colour


async def test_ingest_outlives_many_recycled_connections_storing_each_image_once(
        embedder_server, tmp_path):
    # Connections recycled every 0.5 s with 0.5 s of grace: a 4 s stream is cut more times
    # than `attempts`, each time after progress, and must still finish.
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          max_connection_age_s=0.5,
                                          max_connection_age_grace_s=0.5))
    await server.start()
    images = scene_images(40, seed=37)
    acks: list[str] = []

    def slowly():
        for image_id, data, scene in images:
            time.sleep(0.1)  # a caller reading files over the network
            yield image_id, data, plain_labels(scene)

    def work() -> tuple[list, int]:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.create_collection("long-ingest")
            failed = client.ingest("long-ingest", slowly(), lambda i, e: acks.append(i),
                                   attempts=3)
            return failed, client.get_collection("long-ingest").image_count

    try:
        failed, count = await asyncio.to_thread(work)
    finally:
        await server.stop(grace=1)
    assert failed == []
    assert acks == [image_id for image_id, _, _ in images]
    assert count == len(images)


async def test_calls_spread_over_every_address_of_the_target(embedder_server, tmp_path):
    servers = [SearchServer(search_settings(tmp_path / f"search-{i}.db", embedder_server.port))
               for i in range(2)]
    for server in servers:
        await server.start()
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)

    def work() -> None:
        with SearchClient(target) as client:
            for _ in range(40):
                client.list_collections()

    try:
        await asyncio.to_thread(work)
    finally:
        for server in servers:
            await server.stop(grace=1)
    method = "/imagesearch.search.v1.SearchService/ListCollections"
    handled = [s.registry.get_sample_value("grpc_server_handled_total",
                                           {"method": method, "code": "OK"}) for s in servers]
    # Alternating once both connections are up; the first calls may all go to the first.
    assert sum(h or 0 for h in handled) == 40
    assert all(h is not None and h >= 10 for h in handled), handled


def ack(index: int, image_id: str) -> pb.IngestImagesResponse:
    return pb.IngestImagesResponse(id=image_id, index=index)


def test_a_resumed_stream_resends_unacknowledged_images_first():
    source = Source([(f"i{n}", b"x", {}) for n in range(5)])
    first = Stream("c", source)
    requests = first.requests()
    sent = [next(requests).image.id for _ in range(3)]
    first.acknowledge(ack(0, "i0"))  # then the stream broke
    source.give_back(first.close())
    assert [r.image.id for r in requests] == []  # a dead stream's thread takes nothing more
    resumed = [r.image.id for r in Stream("c", source).requests()]
    assert sent == ["i0", "i1", "i2"]
    assert resumed == ["i1", "i2", "i3", "i4"]
    assert source.done


def test_a_retry_that_fails_before_sending_loses_nothing():
    """On main, a retry that failed while the server was still down dropped the images it was
    about to resend: they lived only in the dead generator."""
    source = Source([(f"i{n}", b"x", {}) for n in range(4)])
    first = Stream("c", source)
    requests = first.requests()
    next(requests), next(requests)
    source.give_back(first.close())
    second = Stream("c", source)
    next(second.requests())  # i0 taken; the call fails before an acknowledgement
    source.give_back(second.close())
    source.give_back(Stream("c", source).close())  # a third that never sent anything
    assert [r.image.id for r in Stream("c", source).requests()] == ["i0", "i1", "i2", "i3"]


def test_an_acknowledgement_out_of_step_is_an_error_not_a_silent_skip():
    source = Source([("a", b"x", {}), ("b", b"x", {})])
    stream = Stream("c", source)
    list(stream.requests())
    with pytest.raises(IngestIncomplete, match=r"acknowledgement 1 \('b'\) does not match"):
        stream.acknowledge(ack(1, "b"))
    assert stream.close() == [("a", b"x", {}), ("b", b"x", {})]


def test_the_callers_iterator_error_reaches_the_caller():
    def items():
        yield "a", b"x", {}
        raise OSError("disk gone")

    source = Source(items())
    assert [r.image.id for r in Stream("c", source).requests()] == ["a"]
    with pytest.raises(OSError, match="disk gone"):
        source.raise_error()


def test_an_image_that_cannot_be_sent_is_refused_alone_on_this_side():
    """Found from outside: a file name in another encoding (a lone surrogate once decoded)
    ended the whole stream 'UNKNOWN: Exception iterating requests!' with nothing stored."""
    source = Source([("a", b"x", {}), ("b\udcff", b"x", {}), ("c", b"x", {"k": "\udc80"}),
                     ("d", b"x", {})])
    assert [r.image.id for r in Stream("c", source).requests()] == ["a", "d"]
    assert [(r.id, r.code) for r in source.refused] == [("b\\udcff", "INVALID_ARGUMENT"),
                                                         ("c", "INVALID_ARGUMENT")]
    assert "not valid Unicode text" in source.refused[0].message


async def test_ingest_reports_unsendable_images_and_stores_the_rest(search):
    server, _ = search
    images = scene_images(3, seed=33)
    items = [("ok-1", images[0][1], {}), ("bad\udcff", images[1][1], {}),
             ("ok-2", images[2][1], {})]
    acks: list[tuple[str, str | None]] = []

    def work():
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.create_collection("unsendable")
            failed = client.ingest("unsendable", items, lambda i, e: acks.append((i, e and e.code)))
            return failed, client.get_collection("unsendable").image_count

    failed, count = await asyncio.to_thread(work)
    assert [(f.id, f.code) for f in failed] == [("bad\\udcff", "INVALID_ARGUMENT")]
    assert count == 2
    assert sorted(acks) == [("bad\\udcff", "INVALID_ARGUMENT"), ("ok-1", None), ("ok-2", None)]


async def test_thumbnails_of_more_ids_than_one_call_takes(embedder_server, tmp_path):
    server = SearchServer(search_settings(tmp_path / "thumbs.db", embedder_server.port))
    await server.start()
    images = scene_images(3, seed=32)

    def work() -> tuple[dict[str, bytes], list[str]]:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.create_collection("client-thumbs")
            client.ingest("client-thumbs", ((i, d, {}) for i, d, _ in images))
            unknown = [f"unknown-{n}" for n in range(1500)]
            return client.thumbnails("client-thumbs", [*unknown[:700], images[1][0],
                                                       *unknown[700:], images[2][0]])

    try:
        found, missing = await asyncio.to_thread(work)
    finally:
        await server.stop(grace=0)
    assert sorted(found) == [images[1][0], images[2][0]]
    assert all(data[:3] == b"\xff\xd8\xff" for data in found.values())  # JPEG
    assert missing == [f"unknown-{n}" for n in range(1500)]
