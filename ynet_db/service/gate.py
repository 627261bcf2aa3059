"""The bound on concurrent searches: a slot per running search, a short wait for one, then 429.

A search holds CPU (the query encoder) or a worker's attention for tens of milliseconds to seconds, so
the service runs at most YNET_MAX_CONCURRENT_SEARCHES at once. A search that finds every slot busy
waits up to YNET_SEARCH_WAIT_S, then is answered 429 with Retry-After: a client backing off is better
than a queue whose latency grows without bound.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ynet_db.metrics.definitions import HTTP_SEARCHES_IN_FLIGHT, HTTP_SEARCHES_REJECTED
from ynet_db.service.errors import ApiError


class SearchGate:
    def __init__(self, slots: int, wait_s: float) -> None:
        self.slots = slots
        self.wait_s = wait_s
        self._free = asyncio.Semaphore(slots)

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.wait_s))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the block; `ApiError(429)` when none frees up in time."""
        try:
            # asyncio.timeout, not wait_for: a cancelled acquire gives its permit back (3.11's wait_for
            # could lose one), and a free slot is taken at once even with a wait of 0.
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            HTTP_SEARCHES_REJECTED.inc()
            raise ApiError(
                429,
                f"all {self.slots} search slots are busy; retry after {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            ) from None
        HTTP_SEARCHES_IN_FLIGHT.inc()
        try:
            yield
        finally:
            HTTP_SEARCHES_IN_FLIGHT.dec()
            self._free.release()
