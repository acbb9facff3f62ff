"""The core's ImageStore port on S3-compatible object storage: MinIO, S3, GCS, R2, Ceph.

    s3://<bucket>/<prefix>/<collection>/<kind>/<id digest>

What every search service replica on a Milvus server shares, where a folder serves one.
Collections and ids are named by the SHA-256 of their key and id (as in the folder store), so
no name a caller sends becomes a key of its choosing. A put is one PutObject, which S3 makes
visible whole or not at all; deleting an image deletes its object of every kind.

Credentials and the endpoint come the AWS way (boto3's chain: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, web identity / IRSA, instance roles), or from
SEARCH_IMAGE_STORE_ENDPOINT and SEARCH_IMAGE_STORE_CREDENTIALS_FILE (an AWS credentials
file, e.g. a mounted Secret). The bucket must exist: the service never creates one.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from search_service.errors import ImageStoreUnavailable

T = TypeVar("T")
# DeleteObjects takes at most this many keys a request.
_DELETE_BATCH = 1000
_MISSING = frozenset({"NoSuchKey", "404"})
# Pauses before retrying a request the store answered with a 5xx, as AWS asks of clients.
_SERVER_ERROR_BACKOFF_S = (0.05, 0.25)


class _Skipped(Exception):
    """A request not made because another of its batch had failed."""


def _server_error(err: ClientError) -> bool:
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return isinstance(status, int) and status >= 500


def _retrying(fn: Callable[[], T]) -> T:
    """`fn()`, again after a pause if the store answered with a server error (5xx)."""
    for pause in _SERVER_ERROR_BACKOFF_S:
        try:
            return fn()
        except ClientError as err:
            if not _server_error(err):
                raise
        time.sleep(pause * random.uniform(0.5, 1.5))
    return fn()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def parse_uri(uri: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of s3://bucket[/prefix]."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket[/prefix] URI: {uri!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3ImageStore:
    """Implements search_service.ports.ImageStore."""

    def __init__(self, uri: str, endpoint: str | None = None, threads: int = 16,
                 timeout_s: float = 2.5, credentials_file: Path | None = None) -> None:
        self._bucket, self._prefix = parse_uri(uri)
        # No retries by botocore (its standard mode's max_attempts counts retries only): a
        # store that stops answering fails a read within about timeout_s and a write within
        # 2 x (it waits for "100 Continue", then the answer), as UNAVAILABLE, which callers
        # retry - every write is idempotent. Our objects are small (<= ~100 KB): 2.5 s is
        # ample for a store that answers. A store that answers 5xx (S3's InternalError and
        # SlowDown) is retried here, briefly.
        config = Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        max_pool_connections=threads)
        session = botocore.session.Session()
        if credentials_file is not None:
            session.set_config_variable("credentials_file", str(credentials_file))
        self._s3: Any = boto3.session.Session(botocore_session=session).client(
            "s3", endpoint_url=endpoint, config=config)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="image-store")

    def _collection(self, key: str) -> str:
        return f"{self._prefix}{_digest(key)[:40]}/"

    def _key(self, key: str, kind: str, image_id: str) -> str:
        return f"{self._collection(key)}{kind}/{_digest(image_id)}"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "error")
            raise ImageStoreUnavailable(f"the image store failed ({code}); "
                                        "retry shortly") from err
        except BotoCoreError as err:  # unreachable, timed out, no credentials
            raise ImageStoreUnavailable(f"the image store failed ({type(err).__name__}); "
                                        "retry shortly") from err

    async def _each(self, fn: Callable[..., T], items: Sequence[Any]) -> list[T]:
        """`fn` on every item, side by side on the store's threads (one request each). After
        a failure the requests not yet begun are skipped: a store that stops answering fails
        a batch in one request's time, not in one per wave of threads."""
        failed = threading.Event()

        def once(item: Any) -> T:
            if failed.is_set():
                raise _Skipped
            try:
                return _retrying(lambda: fn(item))
            except BaseException:
                failed.set()
                raise

        results = await asyncio.gather(*(self._run(once, item) for item in items),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, _Skipped):
                raise result
        return results  # type: ignore[return-value]  # no exceptions, checked above

    async def put(self, collection_key: str, kind: str,
                  items: Sequence[tuple[str, bytes]]) -> None:
        await self._each(lambda item: self._s3.put_object(
            Bucket=self._bucket, Key=self._key(collection_key, kind, item[0]), Body=item[1]),
            items)

    async def get(self, collection_key: str, kind: str, ids: Sequence[str]
                  ) -> dict[str, bytes]:
        found = await self._each(lambda image_id: self._get(self._key(collection_key, kind,
                                                                      image_id)), ids)
        return {image_id: data for image_id, data in zip(ids, found, strict=True)
                if data is not None}

    def _get(self, key: str) -> bytes | None:
        try:
            return bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    async def delete(self, collection_key: str, ids: Sequence[str]) -> None:
        if ids:
            await self._run(_retrying, lambda: self._delete(collection_key, list(ids)))

    def _delete(self, key: str, ids: list[str]) -> None:
        collection = self._collection(key)
        kinds = self._s3.list_objects_v2(Bucket=self._bucket, Prefix=collection, Delimiter="/")
        self._delete_keys(f"{entry['Prefix']}{_digest(image_id)}"
                          for entry in kinds.get("CommonPrefixes", []) for image_id in ids)

    async def delete_collection(self, collection_key: str) -> None:
        await self._run(_retrying, lambda: self._delete_collection(collection_key))

    def _delete_collection(self, key: str) -> None:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._collection(key))
        self._delete_keys(entry["Key"] for page in pages for entry in page.get("Contents", []))

    def _delete_keys(self, keys: Iterator[str]) -> None:
        batch: list[dict[str, str]] = []
        for key in keys:
            batch.append({"Key": key})
            if len(batch) == _DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        answer = self._s3.delete_objects(Bucket=self._bucket,
                                         Delete={"Objects": batch, "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise ClientError({"Error": {"Code": first.get("Code", "DeleteFailed"),
                                         "Message": first.get("Message", "")}}, "DeleteObjects")

    async def check(self) -> None:
        """Raises unless the bucket answers with these credentials. A read (HeadBucket), not a
        write: a probe object written every health check would cost a PUT request each."""
        await self._run(_retrying, lambda: self._s3.head_bucket(Bucket=self._bucket))

    async def close(self) -> None:
        # Waiting for requests in flight would block the event loop: wait on a thread.
        await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)
        self._s3.close()
