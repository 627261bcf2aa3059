"""Bounds on concurrent work in the HTTP service: a slot per running piece of work, a short wait for one,
then 429.

A search holds CPU (the query encoder) or a worker's attention for tens of milliseconds to seconds, so
the service runs at most YNET_MAX_CONCURRENT_SEARCHES at once. A query image at a URL is fetched before
its search takes a slot, under a gate of its own (`FETCHES_PER_SEARCH_SLOT` times as many slots): a
fetch waits on someone else's server for up to its timeout, and held inside a search slot a few slow
URLs would stop every search. Work that finds every slot busy waits up to YNET_SEARCH_WAIT_S, then is
answered 429 with Retry-After: a client backing off is better than a queue whose latency grows without
bound.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge

from ynet_db.metrics.definitions import (
    HTTP_FETCHES_IN_FLIGHT,
    HTTP_FETCHES_REJECTED,
    HTTP_SEARCHES_IN_FLIGHT,
    HTTP_SEARCHES_REJECTED,
)
from ynet_db.service.errors import ApiError

FETCHES_PER_SEARCH_SLOT = 4
"""Query image fetches at once per search slot: a fetch mostly waits on the network, not on a core."""


class Gate:
    def __init__(self, slots: int, wait_s: float, what: str, in_flight: Gauge, rejected: Counter) -> None:
        self.slots = slots
        self.wait_s = wait_s
        self.what = what
        self.in_flight = in_flight
        self.rejected = rejected
        self._free = asyncio.Semaphore(slots)

    @classmethod
    def for_searches(cls, slots: int, wait_s: float) -> Gate:
        return cls(slots, wait_s, "search", HTTP_SEARCHES_IN_FLIGHT, HTTP_SEARCHES_REJECTED)

    @classmethod
    def for_fetches(cls, search_slots: int, wait_s: float) -> Gate:
        slots = FETCHES_PER_SEARCH_SLOT * search_slots
        return cls(slots, wait_s, "image fetch", HTTP_FETCHES_IN_FLIGHT, HTTP_FETCHES_REJECTED)

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
            self.rejected.inc()
            raise ApiError(
                429,
                f"all {self.slots} {self.what} slots are busy; retry after {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            ) from None
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()
            self._free.release()
