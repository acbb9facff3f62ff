"""`imagesearch adaptation` and SearchClient's adaptation calls against a real search service:
refused with too little feedback, then fit, read, switched and reset."""

from __future__ import annotations

import asyncio
import json

from imagesearch.client import SearchClient
from imagesearch.queries import query
from search_service import adaptation
from tests.imagesearch.test_cli import photo_folder, run

__all__ = ["photo_folder"]  # the fixture, shared with test_cli


def judge(port: int, collection: str) -> None:
    """Just enough text feedback for a fit, through the Python client."""
    with SearchClient(f"127.0.0.1:{port}") as client:
        ids = sorted(image.id for image in client.list_images(collection))
        for q in range(adaptation.MIN_QUERIES):
            client.record_feedback(collection, query(text=f"photo number {q}"),
                                   [ids[q % len(ids)]],
                                   [ids[(q + k) % len(ids)] for k in range(1, 5)])


async def test_a_collection_is_fit_switched_and_reset_from_the_command_line(
        search, photo_folder, capsys):
    server, _ = search
    port = server.port
    await run(capsys, port, "index", str(photo_folder), "-c", "adapting", "--create")
    code, _, err = await run(capsys, port, "adaptation", "fit", "-c", "adapting")
    assert code != 0 and err.strip() == (
        "error: FAILED_PRECONDITION: collection 'adapting' has 0 judged text queries with a "
        "relevant image and 0 judgements of text queries; an adaptation needs at least 40 "
        "and 200: record more feedback (RecordFeedback) on text queries first")
    await asyncio.to_thread(judge, port, "adapting")
    code, out, _ = await run(capsys, port, "--json", "adaptation", "fit", "--wait", "-c",
                             "adapting")
    fitted = json.loads(out)
    assert code == 0 and fitted["version"] == "1" and fitted["fit_state"] == "FIT_STATE_DONE"
    assert (fitted["queries_used"], fitted["enabled"]) == ("40", False)
    _, plain, _ = await run(capsys, port, "--json", "search", "photo number 3", "-c",
                            "adapting")
    code, out, _ = await run(capsys, port, "adaptation", "enable", "-c", "adapting")
    assert code == 0 and out.splitlines()[2].split()[:2] == ["1", "on"]
    _, mapped, _ = await run(capsys, port, "--json", "search", "photo number 3", "-c",
                             "adapting")
    _, skipped, _ = await run(capsys, port, "--json", "search", "photo number 3",
                              "--no-adaptation", "-c", "adapting")
    assert json.loads(skipped) == json.loads(plain) != json.loads(mapped)
    code, out, _ = await run(capsys, port, "--json", "adaptation", "reset", "-c", "adapting")
    assert code == 0 and json.loads(out)["version"] == "0"
    code, _, err = await run(capsys, port, "adaptation", "enable", "-c", "adapting")
    assert code != 0 and err.strip() == (
        "error: FAILED_PRECONDITION: collection 'adapting' has no fitted adaptation to "
        "switch: fit one first (FitAdaptation)")


async def test_the_python_client_fits_and_waits(search, photo_folder, capsys):
    server, _ = search
    await run(capsys, server.port, "index", str(photo_folder), "-c", "adapted", "--create")
    await asyncio.to_thread(judge, server.port, "adapted")

    def fit_and_wait():
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.fit_adaptation("adapted", enable=False)
            done = client.wait_for_fit("adapted", timeout_s=60, poll_s=0.1)
            on = client.set_adaptation_enabled("adapted", True)
            client.reset_adaptation("adapted")
            return done, on, client.get_adaptation("adapted")

    done, on, reset = await asyncio.to_thread(fit_and_wait)
    assert (done.version, done.queries_used, done.judgements_used) == (1, 40, 200)
    assert on.enabled and (reset.version, reset.enabled) == (0, False)
