"""What the search core needs from the outside, as small Protocols it owns.

Adapters implement them: search_service.adapters.milvus (a Milvus server or Milvus Lite) and
search_service.adapters.embedder_grpc (the embedder service over gRPC). The unit tests use
in-memory fakes of both. Every method is async: an adapter that blocks (pymilvus does) runs
its calls on threads of its own, never on the event loop.

Errors: methods raise the domain's exceptions (search_service.errors, imagesearch.errors) -
CollectionNotFound, CollectionExists, MilvusUnavailable, EmbedderUnavailable... - never an
adapter's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from search_service.domain import (
    CollectionRecord,
    Condition,
    Embedding,
    Hit,
    Kept,
    ModelSpace,
    ServedModel,
    StoredImage,
)


class VectorStore(Protocol):
    """Tenant collections of vectors with metadata, and nearest-neighbour search in them.

    Rows are kept per collection and space: upsert, get, list, delete and search address
    the rows of `collection.key` in the space of `collection.model` - the embedding model's,
    or another kept beside it under the same record (search_service.copy_index), made on
    first use. delete_collection removes the key's rows from every space.
    """

    async def create_collection(self, name: str, model: ModelSpace,
                                description: str) -> CollectionRecord:
        """Exactly one of concurrent creations of a name succeeds (CollectionExists)."""

    async def get_collection(self, name: str) -> CollectionRecord: ...

    async def list_collections(self, limit: int, after: str) -> list[CollectionRecord]:
        """Names after `after`, in order."""

    async def delete_collection(self, name: str) -> None: ...

    async def update_collection(self, record: CollectionRecord) -> None:
        """Stores the record's model and migration in place of the stored ones;
        CollectionNotFound if the collection is gone or was created again. Makes the spaces
        the migration names."""

    async def delete_space(self, collection: CollectionRecord) -> None:
        """Deletes the key's rows in the space of `collection.model` alone (a model's vectors
        after a migration)."""

    async def counts(self, collections: Sequence[CollectionRecord]) -> list[int]: ...

    async def upsert(self, collection: CollectionRecord, ids: Sequence[str],
                     vectors: np.ndarray, metadata: Sequence[dict[str, Any]]) -> None:
        """Stores every row or none; CollectionNotFound if the collection is gone (or was
        created again) by the time they land."""

    async def get(self, collection: CollectionRecord, ids: Sequence[str],
                  with_vectors: bool = False, strong: bool = False) -> list[StoredImage]:
        """The rows of these ids that exist. Reads see this replica's own writes; with
        `strong`, every write acknowledged anywhere before the call (slower on a server)."""

    async def list_images(self, collection: CollectionRecord, limit: int, after: str,
                          with_vectors: bool = False,
                          with_metadata: bool = True) -> list[StoredImage]:
        """Images after the id `after`, in a stable order."""

    async def delete(self, collection: CollectionRecord, ids: Sequence[str]) -> None: ...

    async def search(self, collection: CollectionRecord, queries: np.ndarray, top_k: int,
                     conditions: tuple[Condition, ...] = (),
                     min_similarity: float = -1.0) -> list[list[Hit]]:
        """The `top_k` nearest images to each unit vector (cosine), best first."""

    async def check(self) -> None:
        """Raises unless the store answers now (the health check)."""

    async def sweep(self) -> list[str]:
        """Removes what late writes left of deleted collections; returns their keys."""

    async def close(self) -> None: ...


class Embedder(Protocol):
    """The embedding models: images and texts in, unit vectors of a model's space out.

    Every call may name the model (`model`: a served model's fingerprint or name; "" the
    embedder's primary); one the embedder does not serve raises ModelNotServed. An embedder
    older than several models ignores the name, so callers still check the fingerprint each
    call returns."""

    async def model(self, remaining: float | None = None, model: str = "") -> ModelSpace: ...

    async def models(self, remaining: float | None = None) -> list[ServedModel]:
        """Every served model, the primary first."""

    async def embed_images(self, images: Sequence[bytes], remaining: float | None = None,
                           model: str = "") -> tuple[str, list[Embedding]]:
        """The model's fingerprint, and per image its vector or why it has none."""

    async def embed_images_signed(self, images: Sequence[bytes],
                                  remaining: float | None = None, thumbnail_side: int = 0,
                                  model: str = "", pixels_side: int = 0,
                                  ) -> tuple[str, list[Embedding], list[Kept]]:
        """As embed_images, with what to keep of each image: its copy signal, a thumbnail at
        most `thumbnail_side` pixels on its longer side when that is not 0, and a normalised
        copy at most `pixels_side` when that is not 0."""

    async def embed_texts(self, texts: Sequence[str], remaining: float | None = None,
                          model: str = "") -> tuple[str, list[Embedding]]: ...

    async def embed_texts_in(self, texts: Sequence[str], language: str,
                             remaining: float | None = None, model: str = "",
                             ) -> tuple[str, list[Embedding], list[str]]:
        """As embed_texts, with the text tower `language` picks ("" the default; a BCP 47
        tag; "auto": detected from the script), and the tower that embedded each text.
        InvalidArgument, naming the languages served, for one no tower serves."""


class ImageStore(Protocol):
    """Bytes kept per image beside the index, by kind - copy signals, thumbnails and the
    pixels to embed again from - under a collection's key (made afresh
    at each creation, so a collection created again never sees a deleted one's bytes).

    A put replaces what an id had of that kind; ids and keys are any strings.
    """

    async def put(self, collection_key: str, kind: str,
                  items: Sequence[tuple[str, bytes]]) -> None: ...

    async def get(self, collection_key: str, kind: str, ids: Sequence[str]
                  ) -> dict[str, bytes]:
        """What is stored for those of `ids` that have it."""

    async def delete(self, collection_key: str, ids: Sequence[str]) -> None:
        """Every kind of each id; ids without any are ignored."""

    async def delete_collection(self, collection_key: str) -> None: ...

    async def check(self) -> None:
        """Raises unless the store can be written now (the health check)."""

    async def close(self) -> None: ...
