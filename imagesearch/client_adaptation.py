"""SearchClient's adaptation calls: fit a collection's learned query adaptation from its
recorded feedback, read it, switch it, reset it (kept apart so client.py stays one screenful
per job)."""

from __future__ import annotations

import time
from typing import Any

from imagesearch.search.v1 import search_pb2 as pb


class Adapting:
    """Mixed into SearchClient, which provides `_call`."""

    def _call(self, method: str, request: Any) -> Any:
        raise NotImplementedError

    def fit_adaptation(self, collection: str, enable: bool = False) -> pb.Adaptation:
        """Starts a fit in the background (state FIT_STATE_FITTING) and returns at once;
        `enable` switches the new map on if it measures clearly better than none on the
        queries held out of the fit. FAILED_PRECONDITION when the feedback is too thin."""
        reply: pb.FitAdaptationResponse = self._call("FitAdaptation", pb.FitAdaptationRequest(
            collection=collection, enable=enable))
        return reply.adaptation

    def get_adaptation(self, collection: str) -> pb.Adaptation:
        reply: pb.GetAdaptationResponse = self._call("GetAdaptation", pb.GetAdaptationRequest(
            collection=collection))
        return reply.adaptation

    def wait_for_fit(self, collection: str, timeout_s: float = 600.0, poll_s: float = 1.0
                     ) -> pb.Adaptation:
        """The adaptation once no fit runs. A fit is known only to the instance running it:
        behind a load balancer, another replica answers FIT_STATE_NONE, so compare `version`
        with the one before the fit when it matters. TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (state := self.get_adaptation(collection)).fit_state == pb.FIT_STATE_FITTING:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the fit of collection {collection!r} still runs after "
                                   f"{timeout_s:g} s")
            time.sleep(poll_s)
        return state

    def set_adaptation_enabled(self, collection: str, enabled: bool) -> pb.Adaptation:
        """Switches the kept map on or off; FAILED_PRECONDITION when none is kept."""
        reply: pb.SetAdaptationEnabledResponse = self._call(
            "SetAdaptationEnabled", pb.SetAdaptationEnabledRequest(collection=collection,
                                                                   enabled=enabled))
        return reply.adaptation

    def reset_adaptation(self, collection: str) -> None:
        """Deletes the kept map (recorded feedback stays)."""
        self._call("ResetAdaptation", pb.ResetAdaptationRequest(collection=collection))
