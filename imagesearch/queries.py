"""Queries for the Python client and the CLI: compound queries and relevance feedback as plain
values, made into search.v1 messages here (see CompoundQuery and Feedback in search.proto for
the math, the limits and the errors).

    client.search("trips", text="a beach", parts=[Part(text="at night", weight=-1)])
    client.search("trips", text="a beach", feedback=Feedback(positive_ids=["b1.jpg"],
                                                             negative_ids=["n7.jpg"]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imagesearch.search.v1 import search_pb2 as pb


@dataclass(frozen=True)
class Part:
    """One weighted term of a compound query: exactly one of text, image (encoded bytes),
    image_id (an indexed image) and vector; weight non-zero, in [-100, 100]."""

    text: str | None = None
    image: bytes | None = None
    image_id: str | None = None
    vector: Sequence[float] | None = None
    weight: float = 1.0
    language: str = ""  # of text: a BCP 47 tag, "auto", or "" for the default tower

    def message(self) -> pb.QueryPart:
        given = [k for k in ("text", "image", "image_id", "vector")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a Part takes exactly one of text, image, image_id and vector; "
                             f"got {', '.join(given) or 'none'}")
        part = pb.QueryPart(weight=self.weight, language=self.language)
        if self.vector is not None:
            part.vector.values[:] = list(self.vector)
        else:
            setattr(part, given[0], getattr(self, given[0]))
        return part


@dataclass(frozen=True)
class Feedback:
    """Relevance feedback (Rocchio): indexed images judged relevant or not; weights None
    take the service's defaults (1, 0.75, 0.15)."""

    positive_ids: Sequence[str] = ()
    negative_ids: Sequence[str] = ()
    query_weight: float | None = None
    positive_weight: float | None = None
    negative_weight: float | None = None
    exclude_positives: bool = False
    include_negatives: bool = False

    def message(self) -> pb.Feedback:
        weights = {k: v for k, v in (("query_weight", self.query_weight),
                                     ("positive_weight", self.positive_weight),
                                     ("negative_weight", self.negative_weight)) if v is not None}
        return pb.Feedback(positive_ids=list(self.positive_ids),
                           negative_ids=list(self.negative_ids),
                           exclude_positives=self.exclude_positives,
                           include_negatives=self.include_negatives, **weights)


def query(*, text: str | None = None, image: bytes | None = None, image_id: str | None = None,
          parts: Sequence[Part] = (), feedback: Feedback | None = None,
          language: str = "", skip_adaptation: bool = False) -> pb.Query:
    """A query of one kind, or - with parts - the compound of them and of the one kind given
    (weight 1), refined by `feedback` when given; `language` is `text`'s. `skip_adaptation`:
    its texts are searched as embedded, not through the collection's learned adaptation."""
    given = (Part(text, image, image_id, language=language if text is not None else "")
             if (text, image, image_id) != (None,) * 3 else None)
    if parts:
        made = pb.Query(compound=pb.CompoundQuery(parts=[
            p.message() for p in ([given] if given else []) + list(parts)]))
    elif given is not None:
        part = given.message()
        kind = part.WhichOneof("kind")
        made = pb.Query(**{kind: getattr(part, kind)}, language=part.language)
    else:
        raise ValueError("give a text, an image, an image id or parts to search by")
    if feedback is not None:
        made.feedback.CopyFrom(feedback.message())
    made.skip_adaptation = skip_adaptation
    return made
