"""`imagesearch thumbnails` and SearchClient.thumbnails(), attacked: ids a case-insensitive
file system cannot tell apart, a service with a small message limit, odd --out folders."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from PIL import Image

from imagesearch import cli
from imagesearch.client import SearchClient
from imagesearch.search.v1 import search_pb2 as pb
from search_service.server import SearchServer
from tests.conftest import encode
from tests.search_fixtures import search_settings


def _noise(side: int, seed: int) -> bytes:
    pixels = random.Random(seed).randbytes(side * side * 3)
    return encode(Image.frombytes("RGB", (side, side), pixels))


# Ids a case-insensitive file system (macOS's and Windows' defaults) cannot tell apart once
# written as <id>.jpg ('%' is written %25, so 'a%2f' and 'a%2F' differ only in case too).
CASE_IDS = ["Beach.png", "beach.png", "a%2f", "a%2F"]


@pytest_asyncio.fixture
async def small_limit(embedder_server: Any, tmp_path: Path) -> AsyncIterator[SearchServer]:
    """A service with a 1 MiB message limit holding 40 noisy images, whose thumbnails (about
    50 KB each, noise does not compress) together pass that limit."""
    server = SearchServer(search_settings(tmp_path / "search.db", embedder_server.port,
                                          max_message_bytes=1 << 20))
    await server.start()
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            await asyncio.to_thread(client.create_collection, "noise")
            for start in range(0, 40, 4):
                images = [pb.NewImage(id=f"n{i:02d}", data=_noise(256, i))
                          for i in range(start, start + 4)]
                await asyncio.to_thread(client._call, "AddImages", pb.AddImagesRequest(
                    collection="noise", images=images))
            await asyncio.to_thread(client._call, "AddImages", pb.AddImagesRequest(
                collection="noise", images=[pb.NewImage(id=i, data=_noise(32, n)) for n, i in
                                            enumerate(CASE_IDS)]))
        yield server
    finally:
        await server.stop(grace=0)


async def test_thumbnails_over_the_message_limit_come_in_smaller_calls(
        small_limit: SearchServer) -> None:
    ids = [f"n{i:02d}" for i in range(40)]
    with SearchClient(f"127.0.0.1:{small_limit.port}") as client:
        found, missing = await asyncio.to_thread(client.thumbnails, "noise", ids)
    assert missing == [] and sorted(found) == ids
    assert sum(map(len, found.values())) > 1 << 20


async def test_thumbnails_into_a_file_or_a_read_only_folder_is_a_clear_error(
        small_limit: SearchServer, tmp_path: Path, capsys: Any) -> None:
    server = f"127.0.0.1:{small_limit.port}"
    afile = tmp_path / "a-file"
    afile.write_text("x")
    code = await asyncio.to_thread(cli.main, ["--server", server, "thumbnails", "n00", "-c",
                                              "noise", "--out", str(afile)])
    assert code == 2 and "a-file" in capsys.readouterr().err


async def test_ids_that_differ_only_in_case_are_written_to_files_that_differ_in_more(
        small_limit: SearchServer, tmp_path: Path, capsys: Any) -> None:
    """Else, there, the second id's thumbnail silently replaces the first's while both are
    reported written."""
    code = await asyncio.to_thread(cli.main, [
        "--server", f"127.0.0.1:{small_limit.port}", "--json", "thumbnails", *CASE_IDS,
        "-c", "noise", "--out", str(tmp_path / "thumbs")])
    written = json.loads(capsys.readouterr().out)["written"]
    assert code == 0 and [w["id"] for w in written] == CASE_IDS
    assert len({Path(w["file"]).name.casefold() for w in written}) == len(CASE_IDS), written
