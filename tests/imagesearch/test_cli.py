"""The imagesearch CLI against the real services (Milvus Lite, bundled model)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys

import pytest
from PIL import Image

from imagesearch import cli, synthetic


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Folders named after the shape inside, as people sort their photos."""
    root = tmp_path_factory.mktemp("photos")
    rng = random.Random(8)
    # Planted alike: with ~6 random scenes a shape, an image's nearest neighbours may share
    # its colour rather than its shape; these have neighbours of their own shape to vote.
    planted = ([synthetic.Scene("red", "circle", 1, "large", "center", "white")] * 2
               + [synthetic.Scene("blue", "star", 2, "small", "center", "gray")] * 3)
    for index in range(36):
        scene = planted[index] if index < len(planted) else synthetic.random_scene(rng)
        folder = root / scene.shape
        folder.mkdir(exist_ok=True)
        synthetic.render(scene, 96, rng).save(folder / f"{index:02d}-{scene.colour}.png")
    (root / "notes.txt").write_text("not an image, not picked up")
    return root


async def run(capsys, server_port: int, *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, ["--server", f"127.0.0.1:{server_port}", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_index_then_search_by_text_and_image(search, photo_folder, capsys):
    server, _ = search
    code, _, err = await run(capsys, server.port, "index", str(photo_folder), "-c", "cli",
                             "--create", "--label-from-folder", "--progress")
    assert code == 0
    assert "indexed 36 of 36 images into 'cli'" in err and "36/36" in err
    assert "/s, 0:00 left" in err  # a rate and what is left
    code, out, _ = await run(capsys, server.port, "--json", "search", "a red circle",
                             "-c", "cli", "-k", "3")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 3
    assert hits[0]["metadata"]["label"] == "circle"
    query = next(photo_folder.glob("star/*.png"))
    code, out, _ = await run(capsys, server.port, "search", "--image", str(query), "-c", "cli")
    lines = out.splitlines()
    assert lines[0].split() == ["#", "similarity", "id", "metadata"]
    assert lines[2].split()[2] == f"star%2F{query.name}"


async def test_filters_duplicates_and_classify(search, photo_folder, capsys):
    server, _ = search
    await run(capsys, server.port, "index", str(photo_folder), "-c", "cli2", "--create",
              "--label-from-folder")
    code, out, _ = await run(capsys, server.port, "--json", "search", "a shape", "-c", "cli2",
                             "--filter", "label=cross", "-k", "50")
    assert code == 0 and {h["metadata"]["label"] for h in json.loads(out)} == {"cross"}
    code, out, _ = await run(capsys, server.port, "--json", "duplicates", "-c", "cli2",
                             "--threshold", "0.99")
    assert code == 0 and isinstance(json.loads(out), list)
    files = [*sorted(photo_folder.glob("circle/0[01]-*.png")), photo_folder / "star/02-blue.png"]
    code, out, _ = await run(capsys, server.port, "--json", "classify", *map(str, files),
                             "-c", "cli2", "-k", "5")
    results = json.loads(out)
    assert code == 0 and [r["labels"][0]["label"] for r in results] == [
        f.parent.name for f in files]


async def test_errors_are_reported_with_their_status(search, capsys):
    server, _ = search
    code, _, err = await run(capsys, server.port, "search", "x", "-c", "missing")
    assert code == 2
    assert err.strip() == "error: NOT_FOUND: collection 'missing' does not exist"


async def test_health_exit_status_fits_a_container_healthcheck(search, embedder_server, capsys):
    server, _ = search
    assert await run(capsys, server.port, "health") == (0, "SERVING\n", "")
    assert await run(capsys, embedder_server.port, "health", "--service",
                     "imagesearch.embedder.v1.EmbedderService") == (0, "SERVING\n", "")
    code, out, _ = await run(capsys, server.port, "health", "--service", "no.such.Service")
    assert (code, out) == (1, "")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        code, _, err = await run(capsys, probe.getsockname()[1], "--timeout", "2", "health")
    assert code == 1 and err.startswith("unhealthy: ")


@pytest.mark.parametrize("relative", ["a/b.png", "a:b.png", "a%2Fb.png", "100%/x.png",
                                      "a%252F.png", "plain.png", "deep/er/c.jpg"])
def test_file_ids_are_reversible_so_no_two_files_share_one(relative):
    """Found from outside: 'sub/000.png' and 'sub:000.png' both became 'sub:000.png' and one
    image was silently replaced."""
    from imagesearch.cli import id_path, path_id

    assert id_path(path_id(relative)) == relative
    assert "/" not in path_id(relative)


def test_every_distinct_path_gets_a_distinct_id():
    from imagesearch.cli import path_id

    paths = ["sub/000.png", "sub:000.png", "sub%2F000.png", "sub%000.png", "sub%25000.png"]
    assert len({path_id(p) for p in paths}) == len(paths)


async def test_common_options_go_before_or_after_the_command(search, photo_folder, capsys):
    """The README's `search --image q.jpg -c trips --json` was refused: --json only before."""
    server, _ = search
    await run(capsys, server.port, "index", str(photo_folder), "-c", "after", "--create")
    code, before, _ = await run(capsys, server.port, "--json", "search", "a red circle",
                                "-c", "after")
    code_after = await asyncio.to_thread(cli.main, [
        "search", "a red circle", "-c", "after", "--json", "--timeout", "30",
        "--server", f"127.0.0.1:{server.port}"])
    after = capsys.readouterr().out
    assert (code, code_after) == (0, 0)
    assert json.loads(before) == json.loads(after)


async def test_a_missing_or_empty_folder_fails_and_creates_nothing(search, tmp_path, capsys):
    server, _ = search
    code, _, err = await run(capsys, server.port, "index", str(tmp_path / "nosuch"), "-c",
                             "never", "--create")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nosuch'}: no such file or folder"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    code, _, err = await run(capsys, server.port, "index", str(tmp_path / "empty"), "-c",
                             "never", "--create")
    assert code == 2 and "no images in it" in err
    _, out, _ = await run(capsys, server.port, "--json", "collections")
    assert "never" not in {c["name"] for c in json.loads(out)}


async def test_labels_that_read_as_numbers_match_their_filter(search, tmp_path, capsys):
    """Folder labels are text: `--filter label=2024` sent the number 2024 and found nothing."""
    server, _ = search
    rng = random.Random(3)
    for label in ("2024", "true", "cats"):
        (tmp_path / label).mkdir()
        for index in range(3):
            synthetic.render(synthetic.random_scene(rng), 64, rng).save(
                tmp_path / label / f"{index}.png")
    await run(capsys, server.port, "index", str(tmp_path), "-c", "years", "--create",
              "--label-from-folder")
    for label in ("2024", "true"):
        code, out, _ = await run(capsys, server.port, "--json", "search", "a shape", "-c",
                                 "years", "--filter", f"label={label}", "-k", "20")
        assert code == 0 and [h["metadata"]["label"] for h in json.loads(out)] == [label] * 3
    code, out, _ = await run(capsys, server.port, "--json", "search", "a shape", "-c",
                             "years", "--filter", "label!=2024", "-k", "20")
    assert sorted({h["metadata"]["label"] for h in json.loads(out)}) == ["cats", "true"]


async def test_classify_without_labelled_neighbours_says_so(search, photo_folder, capsys):
    server, _ = search
    await run(capsys, server.port, "index", str(photo_folder), "-c", "unlabelled", "--create")
    file = str(next(photo_folder.glob("*/*.png")))
    code, _, err = await run(capsys, server.port, "classify", file, "-c", "unlabelled")
    assert code == 1 and f"no label for {file}" in err and "metadata 'label'" in err


async def test_wrong_addresses_get_messages_that_say_what_to_set(search, embedder_server,
                                                                capsys):
    code, _, err = await run(capsys, embedder_server.port, "collections")
    assert code == 2 and "does not serve the search API (is it the embedder's port?" in err
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        code, _, err = await run(capsys, probe.getsockname()[1], "--timeout", "3",
                                 "collections")
    assert code == 2 and "cannot reach the search service" in err and "--server" in err


async def test_health_speaks_json_and_names_an_unknown_service(search, capsys):
    server, _ = search
    assert await run(capsys, server.port, "--json", "health") == (
        0, '{"status": "SERVING"}\n', "")
    code, _, err = await run(capsys, server.port, "health", "--service", "nosuch")
    assert code == 1 and "has no service named 'nosuch'" in err


async def test_a_closed_pipe_ends_the_output_quietly(search, photo_folder):
    server, _ = search
    await asyncio.to_thread(cli.main, ["--server", f"127.0.0.1:{server.port}", "index",
                                       str(photo_folder), "-c", "piped", "--create"])
    command = (f"{sys.executable} -m imagesearch.cli --server 127.0.0.1:{server.port} "
               "search 'a shape' -c piped -k 36 | head -n 0")
    done = await asyncio.to_thread(subprocess.run, ["bash", "-o", "pipefail", "-c", command],
                                   capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr, done.stderr
    assert done.returncode in (0, 141)


async def test_indexing_again_embeds_only_what_changed_and_sync_removes_the_gone(
        search, tmp_path, capsys):
    server, _ = search
    rng = random.Random(4)
    folder = tmp_path / "album"
    for label in ("beach", "city"):
        (folder / label).mkdir(parents=True)
        for index in range(3):
            synthetic.render(synthetic.random_scene(rng), 64, rng).save(
                folder / label / f"{index}.png")
    args = ("index", str(folder), "-c", "album", "--create", "--label-from-folder")
    code, _, err = await run(capsys, server.port, *args)
    assert code == 0 and "indexed 6 of 6 images" in err
    code, _, err = await run(capsys, server.port, *args)
    assert code == 0 and "indexed 0 of 0 images" in err and "6 already there and unchanged" in err
    # One changed, one new, one gone; an image indexed from another folder is never touched.
    synthetic.render(synthetic.random_scene(rng), 64, rng).save(folder / "beach" / "0.png")
    synthetic.render(synthetic.random_scene(rng), 64, rng).save(folder / "city" / "new.png")
    (folder / "city" / "2.png").unlink()
    await run(capsys, server.port, "index", str(tmp_path / "album" / "beach" / "1.png"), "-c",
              "album")  # the folder beach/, not album/
    code, _, err = await run(capsys, server.port, *args)
    assert code == 0 and "indexed 2 of 2 images" in err and "4 already there" in err
    assert "1 indexed from this folder have no file any more (--sync removes them)" in err
    code, _, err = await run(capsys, server.port, *args, "--sync")
    assert code == 0 and "removed 1 whose files are gone" in err
    code, out, _ = await run(capsys, server.port, "--json", "images", "-c", "album")
    ids = sorted(image["id"] for image in json.loads(out))
    assert ids == sorted(["1.png", "beach%2F0.png", "beach%2F1.png", "beach%2F2.png",
                          "city%2F0.png", "city%2F1.png", "city%2Fnew.png"])
    code, _, err = await run(capsys, server.port, "delete", "1.png", "city%2Fnew.png", "-c",
                             "album")
    assert code == 0 and "deleted 2 ids" in err
    _, out, _ = await run(capsys, server.port, "--json", "images", "-c", "album")
    assert len(json.loads(out)) == 5


def _pictures(folder, names, seed):
    rng = random.Random(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        synthetic.render(synthetic.random_scene(rng), 64, rng).save(folder / name)


async def test_sync_never_removes_what_another_folder_or_the_api_stored(search, tmp_path,
                                                                        capsys):
    """Found from outside: `index FILE --sync` removed the rest of the file's folder; a second
    folder's beach.png replaced the first's; an API image with a path-like id was replaced."""
    server, stub = search
    trip1, trip2 = tmp_path / "trip1", tmp_path / "trip2"
    _pictures(trip1, ["beach.png", "hill.png", "sub/c.png"], seed=1)
    _pictures(trip2, ["beach.png", "api.png"], seed=2)
    await run(capsys, server.port, "index", str(trip1), "-c", "trips", "--create")
    from imagesearch.search.v1 import search_pb2 as pb
    await stub.AddImages(pb.AddImagesRequest(collection="trips", images=[pb.NewImage(
        id="api.png", data=(trip2 / "api.png").read_bytes())]))
    code, _, err = await run(capsys, server.port, "index", str(trip1 / "beach.png"), "-c",
                             "trips", "--sync")
    assert code == 2 and "--sync needs a folder" in err
    code, _, err = await run(capsys, server.port, "index", str(trip1 / "beach.png"), "-c",
                             "trips")
    assert code == 0 and "1 already there and unchanged" in err
    assert "have no file any more" not in err  # hill.png and sub/c.png are not "gone"
    code, out, err = await run(capsys, server.port, "--json", "index", str(trip2), "-c",
                               "trips", "--sync")
    refused = {f["id"]: f["message"] for f in json.loads(out)["failed"]}
    assert code == 1 and set(refused) == {"beach.png", "api.png"}
    assert f"indexed from {trip1.resolve()}" in refused["beach.png"]
    assert "not indexed from a folder" in refused["api.png"]
    _, out, _ = await run(capsys, server.port, "--json", "images", "-c", "trips")
    images = {i["id"]: i["metadata"] for i in json.loads(out)}
    assert set(images) == {"beach.png", "hill.png", "sub%2Fc.png", "api.png"}
    assert images["beach.png"]["folder"] == str(trip1.resolve())
    assert "folder" not in images["api.png"]


async def test_symlinked_folders_are_indexed_and_broken_links_skipped(search, tmp_path,
                                                                      capsys):
    server, _ = search
    real = tmp_path / "elsewhere"
    _pictures(real, ["b.png"], seed=3)
    album = tmp_path / "album"
    _pictures(album, ["a.png"], seed=4)
    (album / "linked").symlink_to(real, target_is_directory=True)
    (album / "loop").symlink_to(album, target_is_directory=True)
    (album / "broken.png").symlink_to(tmp_path / "nothing.png")
    code, _, err = await run(capsys, server.port, "index", str(album), "-c", "linked",
                             "--create")
    assert code == 0 and "indexed 2 of 2 images" in err
    code, _, err = await run(capsys, server.port, "index", str(album), "-c", "linked", "--sync")
    assert code == 0 and "2 already there and unchanged" in err and "removed" not in err


async def test_thumbnails_are_written_as_jpegs_named_after_their_ids(search, photo_folder,
                                                                      tmp_path, capsys):
    server, _ = search
    await run(capsys, server.port, "index", str(photo_folder), "-c", "cli-thumbs", "--create")
    ids = [cli.path_id(p.relative_to(photo_folder).as_posix())
           for p in sorted(photo_folder.glob("*/*.png"))[:2]]
    code, out, err = await run(capsys, server.port, "--json", "thumbnails", *ids, "no-such-id",
                               "-c", "cli-thumbs", "--out", str(tmp_path / "thumbs"))
    if server.settings.image_location() is None:  # a Milvus server and no store set
        assert code == 2 and "keeps no thumbnails (SEARCH_IMAGE_STORE is off)" in err
        return
    assert code == 1 and "no thumbnail of 1 ids" in err and "no-such-id" in err
    answer = json.loads(out)
    assert answer["missing"] == ["no-such-id"]
    assert [w["id"] for w in answer["written"]] == ids
    for written in answer["written"]:
        with Image.open(written["file"]) as thumbnail:  # ids hold '/': one file each still
            assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 256
    assert len(list((tmp_path / "thumbs").iterdir())) == 2


@pytest.mark.parametrize("image_id", ["a/b.png", "a%2Fb.png", "..", "x" * 1000, "é/😀"])
def test_thumbnail_file_names_are_one_safe_name_each(image_id):
    name = cli.thumbnail_name(image_id)
    assert "/" not in name and name not in (".jpg", "..jpg") and len(name.encode()) < 255
    assert cli.thumbnail_name(image_id + "y") != name


async def test_class_names_classify_images_with_no_labelled_neighbour(search, photo_folder,
                                                                       tmp_path, capsys):
    server, _ = search
    await run(capsys, server.port, "index", str(photo_folder), "-c", "named", "--create")
    (tmp_path / "names.txt").write_text("\n".join(synthetic.SHAPES[2:]) + "\n\n")
    code, out, _ = await run(capsys, server.port, "--json", "class-names", "add", "circle",
                             "square", "--file", str(tmp_path / "names.txt"), "-c", "named")
    assert code == 0 and json.loads(out) == {"class_name_count": len(synthetic.SHAPES)}
    code, out, _ = await run(capsys, server.port, "--json", "class-names", "list", "-c", "named")
    assert sorted(json.loads(out)) == sorted(synthetic.SHAPES)
    files = sorted(photo_folder.glob("*/*.png"))[:6]
    code, out, _ = await run(capsys, server.port, "--json", "classify", *map(str, files),
                             "-c", "named", "--by", "names")
    found = [r["labels"][0]["label"] for r in json.loads(out)]
    assert code == 0 and sum(f == file.parent.name
                                 for f, file in zip(found, files, strict=True)) >= 5
    code, _, _ = await run(capsys, server.port, "class-names", "delete", "circle", "-c", "named")
    code, out, _ = await run(capsys, server.port, "--json", "class-names", "list", "-c", "named")
    assert "circle" not in json.loads(out)
    code, _, err = await run(capsys, server.port, "classify", str(files[0]), "-c", "named",
                             "--by", "both", "--names-weight", "3")
    assert code == 2 and err.strip() == ("error: INVALID_ARGUMENT: names_weight must be in "
                                         "[0, 1]; got 3.0")
