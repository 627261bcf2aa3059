"""The search client: hands queries to search workers through the broker, without the worker's code.

    runner = CeleryRunner(make_app(settings))
    result = search(engine, photo, k=20, via=runner)

The worker side is `ynet_db.workers.search_tasks`; this module sends to it by name, so a backend that
only searches imports neither torch nor the model. Unlike the embedding tasks, whose results live in the
jobs table, a search answers its caller: its replies travel through a result store derived from the
broker (Redis: the same Redis; the database transport: the database; RabbitMQ: RPC replies).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from celery import Celery
from celery.app.backends import by_url
from celery.result import AsyncResult

from ynet_db.search.filters import FilterError
from ynet_db.search.prefilter import NoActiveModel, SearchError
from ynet_db.search.query import SearchQuery, SearchResult
from ynet_db.workers.app import SEARCH_TASK, WorkerApp, broker_url

ERRORS: dict[str, type[Exception]] = {
    "FilterError": FilterError,
    "SearchError": SearchError,
    "NoActiveModel": NoActiveModel,
}


def result_backend_url(broker: str) -> str:
    scheme = broker.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        return broker
    if scheme.startswith("sqla+"):
        return "db+" + broker.removeprefix("sqla+")
    return "rpc://"


def search_backend(app: Celery) -> Any:
    """The result store of search replies (the app's own, for embedding tasks, stores nothing)."""
    url = broker_url(app.ynet_settings) if isinstance(app, WorkerApp) else str(app.conf.broker_url)
    backend_cls, backend_url = by_url(result_backend_url(url), app.loader)
    return backend_cls(app=app, url=backend_url)


def answer(reply: dict[str, Any]) -> list[SearchResult]:
    if "error" in reply:
        error = ERRORS.get(reply["error"])
        if error is None:
            raise SearchError(f"the search worker failed: {reply['error']}: {reply['message']}")
        raise error(reply["message"])
    return [SearchResult.from_wire(result) for result in reply["results"]]


class CeleryRunner:
    """Sends queries to a worker, batching concurrent callers without delaying a lone one.

    A query leaves at once while fewer than `max_in_flight` messages await replies; queries that
    arrive while all are out wait, and leave together in one message as soon as one reply is back
    (group commit). Set `max_in_flight` to the number of search worker processes: more would queue
    single queries in the broker instead of batching them.
    """

    def __init__(self, app: Celery, *, timeout_s: float = 30.0, max_in_flight: int = 2, max_batch: int = 16):
        self.app = app
        self._backend: Any = None
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiting: list[tuple[SearchQuery, Future[SearchResult]]] = []

    def run(self, queries: Sequence[SearchQuery]) -> list[SearchResult]:
        if len(queries) != 1:
            return self.send(queries)
        future: Future[SearchResult] = Future()
        with self._lock:
            self._waiting.append((queries[0], future))
            batch = self._take() if self._in_flight < self.max_in_flight else []
            self._in_flight += bool(batch)
        if batch:
            self._carry(batch)
        return [future.result(timeout=self.timeout_s + 1)]

    def _take(self) -> list[tuple[SearchQuery, Future[SearchResult]]]:
        batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        return batch

    def _carry(self, batch: list[tuple[SearchQuery, Future[SearchResult]]]) -> None:
        """Send one batch in this in-flight slot; a new thread carries the slot on if more queued meanwhile."""
        try:
            results = self.send([query for query, _ in batch])
        except Exception as error:  # every caller in the batch learns why
            for _, future in batch:
                future.set_exception(error)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
        with self._lock:
            following = self._take()
            self._in_flight -= not following
        if following:
            threading.Thread(target=self._carry, args=(following,), daemon=True).start()

    def send(self, queries: Sequence[SearchQuery]) -> list[SearchResult]:
        """One message, one reply; a query nobody picked up within the timeout expires unanswered."""
        if self._backend is None:
            self._backend = search_backend(self.app)
        pending = self.app.send_task(
            SEARCH_TASK,
            args=[[q.to_wire() for q in queries]],
            expires=self.timeout_s,
            result_cls=partial(AsyncResult, backend=self._backend, app=self.app),
        )
        try:
            reply = pending.get(timeout=self.timeout_s, propagate=True)
        finally:
            pending.forget()
        return answer(reply)
