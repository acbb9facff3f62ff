"""Finds a wedged model: a call into ONNX Runtime that never returns (a GPU or driver hang, a
deadlocked provider) leaves a server that accepts calls, queues them and answers none, while
its event loop - and so a liveness check that only asks whether the process runs - looks fine.

The watchdog reports the server unhealthy while any model call has been running longer than a
limit, and healthy again if it finishes; the server turns that into NOT_SERVING for readiness
(no new calls) and liveness (Kubernetes restarts the pod).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class StallWatchdog:
    def __init__(self, longest_call_s: Callable[[], float], limit_s: float,
                 report: Callable[[bool], Awaitable[None]]) -> None:
        self._longest_call_s = longest_call_s
        self._limit_s = limit_s
        self._report = report
        # Checks often enough that a stall is reported within a quarter of the limit.
        self._period_s = min(5.0, limit_s / 4)
        self.stalled = False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            await self.check()

    async def check(self) -> None:
        running_s = self._longest_call_s()
        stalled = running_s > self._limit_s
        if stalled == self.stalled:
            return
        self.stalled = stalled
        if stalled:
            log.error("model call stalled: reporting NOT_SERVING (readiness and liveness)",
                      extra={"running_s": round(running_s, 1), "limit_s": self._limit_s})
        else:
            log.warning("stalled model call finished: reporting SERVING again")
        await self._report(not stalled)
