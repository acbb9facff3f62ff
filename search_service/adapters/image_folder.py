"""The core's ImageStore port on a local folder: the embedded default's, beside its Lite file.

    <root>/<collection>/<kind>/<ab>/<id digest>

Collections and ids are named by the SHA-256 of their key and id, so no name a caller sends
can reach outside the folder, and `a/b` and `a:b` never meet. Each write goes to a temporary
file first and is renamed into place: a reader sees the old bytes or the new, never half.
A deleted collection's folder is renamed away first, then removed.

One folder serves one search service replica: several replicas need storage they all reach
(a shared volume here, or an object store adapter).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from search_service.errors import ImageStoreUnavailable

_TRASH = ".deleted"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class FolderImageStore:
    """Implements search_service.ports.ImageStore."""

    def __init__(self, root: Path, threads: int = 4) -> None:
        self._root = root
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="image-store")

    def _collection(self, key: str) -> Path:
        return self._root / _digest(key)[:40]

    def _path(self, key: str, kind: str, image_id: str) -> Path:
        name = _digest(image_id)
        return self._collection(key) / kind / name[:2] / name

    async def _run(self, fn: object, *args: object) -> object:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, fn, *args)  # type: ignore[arg-type]
        except OSError as err:
            raise ImageStoreUnavailable(f"the image store failed ({err.strerror or err}); "
                                        "retry shortly") from err

    async def put(self, collection_key: str, kind: str,
                  items: Sequence[tuple[str, bytes]]) -> None:
        await self._run(self._put, collection_key, kind, list(items))

    def _put(self, key: str, kind: str, items: list[tuple[str, bytes]]) -> None:
        for image_id, data in items:
            path = self._path(key, kind, image_id)
            for attempt in range(3):
                try:
                    self._write(path, data)
                    break
                except FileNotFoundError:
                    # The collection's folder was renamed away (deleted) between the mkdir
                    # and the write: the write goes to a fresh folder, which the sweep of the
                    # deleted key removes, as the vector store refuses the rows.
                    if attempt == 2:
                        raise

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    async def get(self, collection_key: str, kind: str, ids: Sequence[str]
                  ) -> dict[str, bytes]:
        found = await self._run(self._get, collection_key, kind, list(ids))
        assert isinstance(found, dict)
        return found

    def _get(self, key: str, kind: str, ids: list[str]) -> dict[str, bytes]:
        found = {}
        for image_id in ids:
            with contextlib.suppress(FileNotFoundError):
                found[image_id] = self._path(key, kind, image_id).read_bytes()
        return found

    async def delete(self, collection_key: str, ids: Sequence[str]) -> None:
        await self._run(self._delete, collection_key, list(ids))

    def _delete(self, key: str, ids: list[str]) -> None:
        folder = self._collection(key)
        if not folder.is_dir():
            return
        for kind in folder.iterdir():
            for image_id in ids:
                name = _digest(image_id)
                with contextlib.suppress(FileNotFoundError):
                    (kind / name[:2] / name).unlink()

    async def delete_collection(self, collection_key: str) -> None:
        await self._run(self._delete_collection, collection_key)

    def _delete_collection(self, key: str) -> None:
        folder = self._collection(key)
        trash = self._root / _TRASH / uuid.uuid4().hex
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.rename(trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    async def check(self) -> None:
        await self._run(self._check)

    def _check(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=self._root, prefix=".probe-")
        os.close(handle)
        os.unlink(probe)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)
