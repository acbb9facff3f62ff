"""SearchClient's feedback calls: relevance judgements recorded as data per collection, listed
(with their query vectors, to export them), and deleted (kept apart so client.py stays one
screenful per job)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from imagesearch.search.v1 import search_pb2 as pb


class RecordingFeedback:
    """Mixed into SearchClient, which provides `_call`."""

    def _call(self, method: str, request: Any) -> Any:
        raise NotImplementedError

    def record_feedback(self, collection: str, query: pb.Query, relevant: Sequence[str] = (),
                        not_relevant: Sequence[str] = ()) -> tuple[list[str], int]:
        """Records that, for `query` (imagesearch.queries.query(...)), the indexed images
        `relevant` were relevant and `not_relevant` were not (1000 ids at most in all).
        Returns the judgements' ids and how many the collection holds now."""
        reply = self._call("RecordFeedback", pb.RecordFeedbackRequest(
            collection=collection, query=query, relevant_ids=list(relevant),
            not_relevant_ids=list(not_relevant)))
        return list(reply.feedback_ids), reply.feedback_count

    def list_feedback(self, collection: str, include_vectors: bool = False,
                      page_size: int = 1000) -> Iterator[pb.FeedbackRecord]:
        token = ""
        while True:
            page = self._call("ListFeedback", pb.ListFeedbackRequest(
                collection=collection, page_size=page_size, page_token=token,
                include_vectors=include_vectors))
            yield from page.feedback
            if not (token := page.next_page_token):
                return

    def delete_feedback(self, collection: str, *, ids: Sequence[str] = (),
                        image_ids: Sequence[str] = (), everything: bool = False) -> None:
        """By feedback id, by judged image id, or everything: exactly one."""
        chosen = ids or image_ids
        for start in range(0, max(len(chosen), 1), 1000):
            self._call("DeleteFeedback", pb.DeleteFeedbackRequest(
                collection=collection, ids=list(ids[start:start + 1000]),
                image_ids=list(image_ids[start:start + 1000]), all=everything))
