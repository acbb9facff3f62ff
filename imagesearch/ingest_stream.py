"""The machinery of SearchClient.ingest: the caller's images, each taken once and sent again
after a broken stream until acknowledged, and one IngestImages call's bookkeeping."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc

from imagesearch.metadata import Scalar, to_value
from imagesearch.search.v1 import search_pb2 as pb


@dataclass(frozen=True)
class ItemError:
    id: str
    code: str
    message: str


NewItem = tuple[str, bytes, Mapping[str, Scalar]]


class IngestIncomplete(RuntimeError):
    """The server kept ending ingest streams with images unacknowledged."""


def _is_text(value: object) -> bool:
    """Valid Unicode text (no lone surrogates: what os.fsdecode makes of a file name in
    another encoding), which protobuf can send."""
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unsendable(item: NewItem) -> ItemError | None:
    """Why an image cannot be sent at all, refused on this side so the others still go."""
    image_id, _, metadata = item
    if not _is_text(image_id):
        return ItemError(image_id.encode("utf-8", "backslashreplace").decode(),
                         "INVALID_ARGUMENT", "id is not valid Unicode text (a file name in "
                         "another encoding?); rename it or choose the id yourself")
    if not all(_is_text(k) and _is_text(v) for k, v in metadata.items()):
        return ItemError(image_id, "INVALID_ARGUMENT", "metadata is not valid Unicode text")
    return None


class Source:
    """The caller's images, taken once each, plus those handed back to be sent again (first).
    Taken on gRPC's request thread and handed back on the caller's, under one lock."""

    def __init__(self, items: Iterable[NewItem]) -> None:
        self.lock = threading.Lock()
        self._items = iter(items)
        self._again: deque[NewItem] = deque()
        self._exhausted = False
        self._error: BaseException | None = None
        # Images refused here, never sent (see `unsendable`).
        self.refused: list[ItemError] = []

    def take(self) -> NewItem | None:
        """The next image to send, or None when there is none (call under `lock`)."""
        if self._again:
            return self._again.popleft()
        while not self._exhausted:
            try:
                item = next(self._items)
            except StopIteration:
                self._exhausted = True
            except BaseException as err:  # the caller's own error, re-raised on its thread
                self._error, self._exhausted = err, True
            else:
                refusal = unsendable(item)
                if refusal is None:
                    return item
                self.refused.append(refusal)
        return None

    def give_back(self, items: Sequence[NewItem]) -> None:
        with self.lock:
            self._again.extendleft(reversed(items))

    @property
    def done(self) -> bool:
        with self.lock:
            return self._exhausted and not self._again

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error


class Stream:
    """One IngestImages call: what it sent, in order, and how much of that was acknowledged.
    Once closed it sends nothing more, so an image is never both resent and still in flight
    on a dead call."""

    def __init__(self, collection: str, source: Source) -> None:
        self._collection = collection
        self._source = source
        self._sent: list[NewItem] = []
        self._closed = False
        self.acknowledged = 0

    def requests(self) -> Iterator[pb.IngestImagesRequest]:
        while True:
            with self._source.lock:
                item = None if self._closed else self._source.take()
                if item is None:
                    return
                self._sent.append(item)
            image_id, data, metadata = item
            yield pb.IngestImagesRequest(collection=self._collection, image=pb.NewImage(
                id=image_id, data=data, metadata={k: to_value(v) for k, v in metadata.items()}))

    def acknowledge(self, ack: pb.IngestImagesResponse) -> ItemError | None:
        with self._source.lock:
            expected = self._sent[ack.index][0] if ack.index < len(self._sent) else None
        if ack.index != self.acknowledged or ack.id != expected:
            raise IngestIncomplete(f"acknowledgement {ack.index} ({ack.id!r}) does not match "
                                   f"image {self.acknowledged} sent ({expected!r})")
        self.acknowledged += 1
        if ack.status.code == 0:
            return None
        return ItemError(ack.id, code_name(ack.status.code), ack.status.message)

    def close(self) -> list[NewItem]:
        """Stops sending; returns what was sent and not acknowledged, in order."""
        with self._source.lock:
            self._closed = True
            return self._sent[self.acknowledged:]


def code_name(value: int) -> str:
    """The name of a canonical status code number (3 -> INVALID_ARGUMENT)."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == value), "UNKNOWN")
