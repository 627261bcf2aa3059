"""The search worker: answers the requests backends insert into `ynet.search_requests`.

    RequestWorker(engine, settings, RegisteredModels(engine, settings)).run(stop)

It wakes on NOTIFY `ynet_search_requests` (sent when a request is inserted) and also looks every
`poll_s`, because a notification is lost while nobody listens. Each round it claims a batch
(`queue.claim`: SKIP LOCKED, a lease), turns each request into a `SearchQuery` (the image decoded, or
fetched under the fetch policy; k and filters checked as the Python API checks them), answers them all
with one forward pass through `ynet_db.search.query.run_queries` (the Python API's own query path), and writes
the results. The queue lives on the primary (`engine`); the candidates are read from the first read
replica that answers (YNET_SEARCH_DATABASE_URLS, `ynet_db/db/replicas.py`), else from the primary too. A
request that cannot be answered (a bad image, a bad filter, no active model) is failed with the error
text: that is its answer. Every `sweep_s` it expires and deletes old requests.

`stop` (set on SIGTERM) cuts a fetch in flight; a batch stopped before its model work is released,
so another worker answers it at once rather than after the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from ynet_db.config import Settings
from ynet_db.db.replicas import SearchDatabases
from ynet_db.db.server import libpq_dsn
from ynet_db.images.decode import decode_image
from ynet_db.images.fetch import DEFAULT_TIMEOUT_S, FetchCancelled, fetch_image_bytes
from ynet_db.images.policy import FetchPolicy
from ynet_db.liveness import Liveness
from ynet_db.models.loaded import LoadedModels
from ynet_db.search.prefilter import ActiveModel, active_model
from ynet_db.search.query import QueryModel, SearchQuery, SearchResult, on_search_database, run_queries
from ynet_db.search.requests import queue

log = logging.getLogger(__name__)

CHANNEL = "ynet_search_requests"
MAX_FETCHES = 8
"""Image URLs of one batch fetched at once."""
RECONNECT_DELAY_S = 2.0
ANSWERABLE = (ValueError, LookupError, RuntimeError)
"""What a request's own content can cause (ImageError and FilterError are ValueErrors, SearchError a
RuntimeError): recorded as its answer. Anything else (the database going away) is the worker's problem,
and the lease hands the request to another worker."""


@dataclass(frozen=True)
class RequestWorkerOptions:
    batch_size: int = 8
    """Requests claimed, and encoded in one forward pass, per round."""
    lease: timedelta = queue.DEFAULT_LEASE
    """How long a claimed request stays this worker's; it must exceed a round (fetch deadline + model work)."""
    poll_s: float = 1.0
    """Seconds between looks at the table without a wake-up."""
    sweep_s: float = 10.0
    """Seconds between expiring unanswered requests and deleting old ones."""
    retention: timedelta = queue.DEFAULT_RETENTION
    """How long a finished request and its results stay readable."""
    fetch_timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.poll_s <= 0 or self.sweep_s <= 0 or self.fetch_timeout_s <= 0:
            raise ValueError(f"search worker options must be positive: {self}")
        if self.lease.total_seconds() <= self.fetch_timeout_s:
            raise ValueError(
                f"the lease ({self.lease.total_seconds():g} s) must exceed the fetch deadline "
                f"({self.fetch_timeout_s:g} s), or a slow URL hands its request to a second worker"
            )


class ModelSource(Protocol):
    def model_for(self, active: ActiveModel) -> QueryModel: ...


@dataclass
class RegisteredModels:
    """The active model, loaded from the registry when first needed and again when another one is activated
    (`ynet_db/models/loaded.py` holds them)."""

    engine: Engine
    settings: Settings
    models: LoadedModels[QueryModel] = field(default_factory=LoadedModels)

    def model_for(self, active: ActiveModel) -> QueryModel:
        return self.models.get(active.id, lambda: self._load(active))

    def _load(self, active: ActiveModel) -> QueryModel:
        from ynet_db.models.serving import load_record

        model = load_record(active, self.settings)
        log.info("search worker %s loaded model %s (id %s)", os.getpid(), active.version, active.id)
        return model


@dataclass(frozen=True)
class Prepared:
    """A claimed batch made ready: the queries to run, and the requests already answered by an error."""

    queries: list[tuple[int, SearchQuery]]
    failures: list[tuple[int, str]]
    cancelled: list[int]


class RequestWorker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        models: ModelSource,
        options: RequestWorkerOptions | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.engine = engine
        self.searches = SearchDatabases.from_settings(settings, engine)
        self.models = models
        self.options = options or RequestWorkerOptions()
        self.policy = FetchPolicy.from_settings(settings)
        self.name = f"{socket.gethostname()}/{os.getpid()}"
        """Written into `claimed_by`: host and pid, as the embedding workers write theirs."""
        self.liveness = liveness or Liveness(stale_after_s=self.options.lease.total_seconds())

    # -- the loop -----------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Load the active model now, so the first request does not wait for it (with none active: later)."""
        try:
            self.models.model_for(on_search_database(self.searches, active_model))
        except ANSWERABLE as error:
            log.warning("search worker %s starts without a model: %s", self.name, error)
        self.liveness.beat()

    def run(self, stop: threading.Event) -> None:
        """Answer requests until `stop` is set; survives database outages (reconnecting)."""
        while not stop.is_set():
            try:
                self._listen(stop)
            except (psycopg.OperationalError, OperationalError, OSError) as error:
                log.warning("search worker lost the database (%s); reconnecting in %g s", error, RECONNECT_DELAY_S)
                stop.wait(RECONNECT_DELAY_S)

    def _listen(self, stop: threading.Event) -> None:
        with psycopg.connect(libpq_dsn(self.engine.url), autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            next_sweep = 0.0  # at once: whatever expired while no worker ran
            while not stop.is_set():
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + self.options.sweep_s
                if self.serve_batch(stop):
                    continue  # more may be waiting: look again before sleeping
                self.liveness.beat()
                if self._woken(conn):
                    for _ in conn.notifies(timeout=0.0):  # one round answers every insert so far
                        pass

    def _woken(self, conn: psycopg.Connection) -> bool:
        """A wake-up within the poll interval (at most 1 s, so `stop` is seen)."""
        waiting = conn.notifies(timeout=min(self.options.poll_s, 1.0), stop_after=1)
        try:
            return next(waiting, None) is not None
        finally:
            waiting.close()  # a suspended generator holds the connection's lock: the next call would hang

    def sweep(self) -> queue.Sweep:
        swept = queue.sweep(self.engine, self.options.retention)
        if swept.expired or swept.given_up or swept.deleted:
            log.info(
                "search requests: %d expired, %d given up, %d deleted", swept.expired, swept.given_up, swept.deleted
            )
        return swept

    def serve_batch(self, stop: threading.Event | None = None) -> int:
        """Claim and answer one batch; returns how many requests were claimed."""
        claimed = queue.claim(self.engine, self.name, self.options.batch_size, self.options.lease)
        if not claimed:
            return 0
        self.liveness.beat()
        cancelled = stop.is_set if stop is not None else (lambda: False)
        try:
            prepared = self.prepare(claimed, cancelled)
            if prepared.cancelled or cancelled():
                held = [request_id for request_id, _ in prepared.queries] + prepared.cancelled
                queue.fail(self.engine, self.name, prepared.failures)
                queue.release(self.engine, self.name, held)
                return len(claimed)
            answers, failures = self.run_queries(prepared.queries)
            queue.answer(self.engine, self.name, answers)
            queue.fail(self.engine, self.name, prepared.failures + failures)
        finally:
            self.liveness.beat()
        return len(claimed)

    # -- one batch --------------------------------------------------------------------------------------

    def prepare(self, claimed: Sequence[queue.ClaimedRequest], cancelled: Callable[[], bool]) -> Prepared:
        """Each request's query, fetched in parallel: a round waits for one fetch deadline, not one per URL."""
        with ThreadPoolExecutor(max_workers=min(len(claimed), MAX_FETCHES)) as pool:
            outcomes = list(pool.map(lambda request: self._prepare_one(request, cancelled), claimed))
        queries = [(r.id, o) for r, o in zip(claimed, outcomes, strict=True) if isinstance(o, SearchQuery)]
        failures = [(r.id, o) for r, o in zip(claimed, outcomes, strict=True) if isinstance(o, str)]
        stopped = [r.id for r, o in zip(claimed, outcomes, strict=True) if o is None]
        return Prepared(queries, failures, stopped)

    def _prepare_one(self, request: queue.ClaimedRequest, cancelled: Callable[[], bool]) -> SearchQuery | str | None:
        """The query, or the error text that answers the request, or None when stopped before it was ready."""
        if cancelled():
            return None
        try:
            return self.query(request, cancelled)
        except FetchCancelled:
            return None
        except ANSWERABLE as error:
            return str(error)

    def query(self, request: queue.ClaimedRequest, cancelled: Callable[[], bool]) -> SearchQuery:
        """The request as the Python API's query: image decoded (fetched first, for a URL), k and filters checked."""
        if request.image_url is not None:
            data = fetch_image_bytes(
                request.image_url, policy=self.policy, timeout_s=self.options.fetch_timeout_s, cancelled=cancelled
            )
            picture = decode_image(data, source=request.image_url)
        else:
            picture = decode_image(request.image or b"", source="query")
        return SearchQuery(picture, k=request.k, filters=request.filters)

    def run_queries(
        self, queries: Sequence[tuple[int, SearchQuery]]
    ) -> tuple[list[tuple[int, SearchResult]], list[tuple[int, str]]]:
        """All queries in one forward pass; should that fail, each alone, so one request's error is its own."""
        if not queries:
            return [], []
        try:
            return self._run(queries), []
        except ANSWERABLE as error:
            if len(queries) == 1:
                return [], [(queries[0][0], str(error))]
        answers: list[tuple[int, SearchResult]] = []
        failures: list[tuple[int, str]] = []
        for request_id, query in queries:
            try:
                answers += self._run([(request_id, query)])
            except ANSWERABLE as error:
                failures.append((request_id, str(error)))
        return answers, failures

    def _run(self, queries: Sequence[tuple[int, SearchQuery]]) -> list[tuple[int, SearchResult]]:
        results = run_queries(self.searches, self.models.model_for, [query for _, query in queries])
        return [(request_id, result) for (request_id, _), result in zip(queries, results, strict=True)]
