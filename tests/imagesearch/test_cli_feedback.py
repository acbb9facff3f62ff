"""`imagesearch feedback` against a real search service: record, list (an export with the
query vectors), delete, and a clear error."""

from __future__ import annotations

import json

from tests.imagesearch.test_cli import photo_folder, run

__all__ = ["photo_folder"]  # the fixture, shared with test_cli


async def test_feedback_is_recorded_listed_and_deleted(search, photo_folder, capsys):
    server, _ = search
    port = server.port
    await run(capsys, port, "index", str(photo_folder), "-c", "judged", "--create")
    _, out, _ = await run(capsys, port, "--json", "images", "-c", "judged")
    first, second = sorted(image["id"] for image in json.loads(out))[:2]
    code, out, _ = await run(capsys, port, "--json", "feedback", "record", "a red circle",
                             "--relevant", first, "--irrelevant", second, "-c", "judged")
    assert code == 0 and json.loads(out)["feedback_count"] == 2
    code, out, _ = await run(capsys, port, "--json", "feedback", "list", "--vectors", "-c",
                             "judged")
    kept = {r["image_id"]: r for r in json.loads(out)}
    assert code == 0 and kept[first]["relevant"] and not kept[second].get("relevant")
    assert kept[first]["query_description"] == "a red circle" and kept[first]["query_vector"]
    await run(capsys, port, "feedback", "delete", "--image-id", first, "-c", "judged")
    code, out, _ = await run(capsys, port, "--json", "feedback", "list", "-c", "judged")
    assert [r["image_id"] for r in json.loads(out)] == [second]
    code, _, err = await run(capsys, port, "feedback", "record", "x", "--relevant", "gone",
                             "-c", "judged")
    assert code != 0 and err.strip() == ("error: NOT_FOUND: images 'gone' are not in "
                                         "collection 'judged': nothing was recorded")
