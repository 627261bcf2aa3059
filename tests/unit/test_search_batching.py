"""CeleryRunner gathers queries from concurrent callers into one message, and answers each its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from ynet_db.search.client import CeleryRunner, answer
from ynet_db.search.query import SearchError, SearchQuery, SearchResult


class Recording(CeleryRunner):
    """A runner whose 'worker' answers at once, or, with `hold_until_queued`, holds the first message's
    reply until that many later queries wait: the round trip during which they queue, made certain."""

    def __init__(self, fail: bool = False, hold_until_queued: int = 0) -> None:
        super().__init__(SimpleNamespace(), max_in_flight=1)  # type: ignore[arg-type]
        self.batches: list[int] = []
        self.fail = fail
        self.hold_until_queued = hold_until_queued
        self.lock = threading.Lock()

    def send(self, queries: Sequence[SearchQuery]) -> list[SearchResult]:
        with self.lock:
            self.batches.append(len(queries))
            first = len(self.batches) == 1
        if self.fail:
            raise SearchError("the worker is gone")
        if first and self.hold_until_queued:
            self.wait_until(lambda: len(self._waiting) == self.hold_until_queued)
        return [SearchResult([], "m@1", "ann", False, q.k, 0, False) for q in queries]

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:  # the runner's own lock guards its queue
                if condition():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.hold_until_queued} queries never queued behind the first")
            time.sleep(0.001)


def test_concurrent_queries_share_messages_and_get_their_own_answers() -> None:
    runner = Recording(hold_until_queued=5)

    def one(k: int) -> int:
        return runner.run([SearchQuery(b"x", k=k, candidates=100)])[0].candidates_asked  # = k, see send

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(one, range(1, 7))) == [1, 2, 3, 4, 5, 6]  # each its own (k echoed back)
    # The first query left alone; the five that came while it was out left together in one message.
    assert runner.batches == [1, 5]


def test_a_lone_query_leaves_at_once_and_alone() -> None:
    runner = Recording()
    for k in (1, 2):
        assert runner.run([SearchQuery(b"x", k=k, candidates=10)])[0].candidates_asked == k
    assert runner.batches == [1, 1] and runner._in_flight == 0


def test_every_caller_in_a_failed_batch_learns_why() -> None:
    runner = Recording(fail=True)
    with pytest.raises(SearchError) as raised:
        runner.run([SearchQuery(b"x", k=1, candidates=1)])
    assert str(raised.value) == "the worker is gone"


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        ({"error": "FilterError", "message": "unknown filter field 'x'"}, "FilterError", "unknown filter field 'x'"),
        (
            {"error": "ImageError", "message": "image query: is empty"},
            "SearchError",
            "the search worker failed: ImageError: image query: is empty",
        ),
    ],
)
def test_worker_errors_come_back_by_name(reply: dict[str, str], error: str, message: str) -> None:
    with pytest.raises(Exception) as raised:
        answer(reply)
    assert (type(raised.value).__name__, str(raised.value)) == (error, message)
