"""SearchClient's classification calls: Classify by labelled images, by class names or both,
and the class names a collection keeps (kept apart so client.py stays one screenful per job)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from imagesearch.search.v1 import search_pb2 as pb

SOURCES = {"labelled": pb.CLASS_SOURCE_LABELLED_IMAGES, "names": pb.CLASS_SOURCE_NAMES,
           "both": pb.CLASS_SOURCE_BOTH}


class Classifying:
    """Mixed into SearchClient, which provides `_call`."""

    def _call(self, method: str, request: Any) -> Any:
        raise NotImplementedError

    def classify(self, collection: str, images: Sequence[bytes], label_key: str = "label",
                 k: int = 10, *, source: str = "labelled", names_weight: float | None = None,
                 ) -> list[list[tuple[str, float, int]]]:
        """Per image, (label, confidence, votes) best first. `source`: "labelled" (a vote of
        the k nearest images with `label_key`), "names" (the collection's class names,
        zero-shot) or "both" (mixed; `names_weight` is the names' share, default 0.5)."""
        request = pb.ClassifyRequest(collection=collection, label_key=label_key, k=k,
                                     source=SOURCES[source],
                                     queries=[pb.Query(image=d) for d in images])
        if names_weight is not None:
            request.names_weight = names_weight
        results = self._call("Classify", request).results
        return [[(s.label, s.confidence, s.votes) for s in r.labels] for r in results]

    def add_class_names(self, collection: str, names: Sequence[str]) -> int:
        """Keeps `names` for zero-shot Classify, 1000 a call; returns how many are kept now."""
        held = 0
        for start in range(0, len(names), 1000):
            held = self._call("AddClassNames", pb.AddClassNamesRequest(
                collection=collection, names=list(names[start:start + 1000]))).class_name_count
        return held

    def list_class_names(self, collection: str, page_size: int = 1000) -> Iterator[str]:
        token = ""
        while True:
            page = self._call("ListClassNames", pb.ListClassNamesRequest(
                collection=collection, page_size=page_size, page_token=token))
            yield from page.names
            if not (token := page.next_page_token):
                return

    def delete_class_names(self, collection: str, names: Sequence[str]) -> None:
        for start in range(0, len(names), 1000):
            self._call("DeleteClassNames", pb.DeleteClassNamesRequest(
                collection=collection, names=list(names[start:start + 1000])))
