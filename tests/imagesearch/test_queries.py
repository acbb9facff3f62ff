"""Compound queries and relevance feedback from the Python client and the CLI, against the
real services (Milvus Lite and a Milvus server, the bundled model)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
import pytest_asyncio

from imagesearch import cli, synthetic
from imagesearch.client import Feedback, Part, SearchClient
from imagesearch.queries import query
from imagesearch.search.v1 import search_pb2 as pb
from tests.conftest import encode
from tests.search_fixtures import scene_images

COLLECTION = "queries"


@pytest_asyncio.fixture(scope="module")
async def scenes(search) -> dict[str, synthetic.Scene]:
    server, _ = search
    items = scene_images(120, seed=23)

    def work() -> None:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.create_collection(COLLECTION)
            assert client.add_images(COLLECTION, [(i, d, {"colour": s.colour})
                                                  for i, d, s in items]) == []
    await asyncio.to_thread(work)
    return {i: s for i, _, s in items}


async def cli_run(capsys, port: int, *args: str) -> tuple[int, object, str]:
    code = await asyncio.to_thread(cli.main, ["--server", f"127.0.0.1:{port}", "--json",
                                              "search", "-c", COLLECTION, *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else None, err


def test_parts_and_feedback_become_the_documented_messages():
    made = query(text="a beach", parts=[Part(text="night", weight=-1), Part(image_id="b1")],
                 feedback=Feedback(["p"], ["n"], positive_weight=0.5, include_negatives=True))
    assert [(p.WhichOneof("kind"), p.weight) for p in made.compound.parts] == [
        ("text", 1.0), ("text", -1.0), ("image_id", 1.0)]
    assert made.feedback == pb.Feedback(positive_ids=["p"], negative_ids=["n"],
                                        positive_weight=0.5, include_negatives=True)
    assert not made.feedback.HasField("query_weight")  # unset: the service's default
    assert query(image_id="x") == pb.Query(image_id="x")
    with pytest.raises(ValueError, match="exactly one of text, image, image_id and vector; "
                                         "got text, image_id"):
        query(parts=[Part(text="a", image_id="b")])
    with pytest.raises(ValueError, match="give a text, an image, an image id or parts"):
        query()


async def test_the_client_searches_by_parts_and_refines_by_feedback(search, scenes):
    server, _ = search
    blue = [i for i, s in scenes.items() if s.colour == "blue"]

    def work() -> tuple[list, list, list, list]:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            plain = client.search(COLLECTION, text="a red star", top_k=5)
            swapped = client.search(COLLECTION, text="a red star", top_k=5, parts=[
                Part(text="red", weight=-1), Part(text="blue")])
            refined = client.search(COLLECTION, image_id=blue[0], top_k=len(scenes),
                                    feedback=Feedback(blue[1:3], [blue[3]]))
            drawn = encode(synthetic.render(scenes[blue[1]], 96, random.Random(1)))
            alike = client.find_duplicates(COLLECTION, similar=True, min_similarity=-1,
                                           parts=[Part(image_id=blue[0]),
                                                  Part(image=drawn, weight=0.5)])
            return plain, swapped, refined, alike

    plain, swapped, refined, alike = await asyncio.to_thread(work)
    # 12 of the 120 scenes are blue, none a blue star: the swap brings blue things (and other
    # stars) where the text alone finds red ones.
    assert sum(h.metadata["colour"] == "blue" for h in plain) == 0
    assert sum(h.metadata["colour"] == "blue" for h in swapped) >= 3
    assert blue[3] not in {h.id for h in refined} and len(refined) == len(scenes) - 1
    assert blue[0] not in {h.id for h in alike} and all(h.match == "similar" for h in alike)


async def test_the_cli_takes_parts_weights_and_feedback_as_options(search, scenes, capsys,
                                                                   tmp_path):
    server, _ = search
    blue = [i for i, s in scenes.items() if s.colour == "blue"]
    code, hits, _ = await cli_run(capsys, server.port, "a red star", "--minus", "red",
                                  "--plus", "blue", "-k", "5")
    assert code == 0 and sum(h["metadata"]["colour"] == "blue" for h in hits) >= 3
    image = tmp_path / "q.png"
    synthetic.render(scenes[blue[0]], 96, random.Random(2)).save(image)
    code, hits, _ = await cli_run(capsys, server.port, "--id", blue[0], "--weight", "2",
                                  "--part", "1", "image", str(image), "--unlike", blue[1],
                                  "--relevant", blue[2], "--irrelevant", blue[3],
                                  "--feedback-weights", "1", "0.5", "0.1", "-k", "120")
    assert code == 0 and blue[3] not in {h["id"] for h in hits} and len(hits) == 119
    code, hits, _ = await cli_run(capsys, server.port, "--like", blue[0], "--relevant", blue[1],
                                  "--exclude-relevant", "-k", "3")
    assert code == 0 and hits[0]["id"] == blue[0] and blue[1] not in {h["id"] for h in hits}
    code, hits, _ = await cli_run(capsys, server.port, "a blue star", "--cutoff", "gap",
                                  "-k", "50")
    assert code == 0 and 1 <= len(hits) < 50


@pytest.mark.parametrize(("args", "message"), [
    (("x", "--minus", "x"), "error: the parts cancel out: their weighted sum has length 0"),
    (("x", "--part", "two", "text", "y"), "error: --part two text ...: the weight must be a "
                                          "number"),
    (("x", "--part", "1", "colour", "y"), "error: --part 1 colour ...: KIND is one of text, "
                                          "image, id"),
    (("x", "--unlike", "ghost"), "error: part 2 (image_id): image 'ghost' is not in collection"),
    (("x", "--relevant", "ghost"), "error: feedback examples are not in collection 'queries': "
                                   "'ghost'"),
    (("x", "--part", "0", "text", "y"), "error: part 2: weight 0.0 is invalid"),
])
async def test_the_cli_says_what_is_wrong_with_a_query(search, scenes, capsys, args, message):
    server, _ = search
    code, _, err = await cli_run(capsys, server.port, *args)
    assert code == 2 and err.startswith(message), err


async def test_the_cli_needs_something_to_search_by(search, scenes, capsys):
    server, _ = search
    with pytest.raises(SystemExit, match="give a text query, --image FILE, --id ID, or parts"):
        await cli_run(capsys, server.port, "--relevant", "x")
    with pytest.raises(SystemExit, match="at most one of a text query, --image FILE and --id"):
        await cli_run(capsys, server.port, "x", "--id", "y")
