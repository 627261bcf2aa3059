"""Where searches read: the read replicas of YNET_SEARCH_DATABASE_URLS in their order, then the primary.

    databases = SearchDatabases.from_settings(settings, engine)
    rows = databases.read(lambda conn: ..., fall_back_on=(SearchError,))

A search is one function of one connection: it reads the active model and that model's vectors from one
server, in one REPEATABLE READ transaction (one snapshot), so a replica that lags behind the primary
answers from its own consistent view and never pairs one server's model with another's vectors.
Lag is allowed; what a replica cannot do is hand the search on:
- the replica cannot be reached or fails mid-search (connection refused, the connect timeout, the server
  gone, a query cancelled by a replay conflict): any error of the database driver;
- its view cannot answer this search (`fall_back_on`, the caller's errors: e.g. it has not replayed the
  activation of the query's model yet, or has no active model at all).
The search then goes to the next replica, and finally to the primary, with a warning that names the replica
(its password hidden) and the reason; the replica is left alone for `rest_s` seconds (one warning, not one
per search, and no connect timeout per search). On the primary, errors are the search's own, as without
replicas. With no replicas, `read` runs on the primary in an ordinary transaction, as searches always did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ynet_db.config import Settings
from ynet_db.db.engine import make_engine
from ynet_db.db.server import psycopg_url

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 3
"""How long a search waits for a replica to accept its connection before it goes elsewhere."""
REST_S = 10.0
"""How long a replica that could not answer is skipped before a search tries it again."""
SNAPSHOT = "REPEATABLE READ"
"""One snapshot for the whole search: the active model, the counts and the candidates agree."""


class SearchDatabases:
    """The primary, and the replicas that searches try first, in order (none: the primary alone)."""

    def __init__(self, primary: Engine, replicas: Sequence[Engine] = (), rest_s: float = REST_S) -> None:
        self.primary = primary
        self.replicas = tuple(replicas)
        self.rest_s = rest_s
        self._resting_until = [0.0] * len(self.replicas)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, primary: Engine, rest_s: float = REST_S) -> SearchDatabases:
        """The replicas of YNET_SEARCH_DATABASE_URLS (connected when first used), then `primary`."""
        replicas = [
            make_engine(psycopg_url(url), connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
            for url in settings.search_database_urls
        ]
        return cls(primary, replicas, rest_s)

    @classmethod
    def of(cls, source: Engine | SearchDatabases) -> SearchDatabases:
        """`source` itself, or an engine as the only database (no replicas)."""
        return source if isinstance(source, SearchDatabases) else cls(source)

    def read(self, search: Callable[[Connection], T], fall_back_on: tuple[type[Exception], ...] = ()) -> T:
        """`search` in one snapshot on the first replica that answers it, else on the primary."""
        if not self.replicas:
            with self.primary.begin() as conn:
                return search(conn)
        handed_on: tuple[type[Exception], ...] = (DBAPIError, *fall_back_on)
        for number in self._awake():
            try:
                return _in_snapshot(self.replicas[number], search)
            except handed_on as error:
                self._rest(number, error)
        return _in_snapshot(self.primary, search)

    def dispose(self) -> None:
        """Close the replicas' pooled connections (the primary is its owner's)."""
        for replica in self.replicas:
            replica.dispose()

    def _awake(self) -> list[int]:
        now = time.monotonic()
        with self._lock:
            return [number for number, until in enumerate(self._resting_until) if until <= now]

    def _rest(self, number: int, error: Exception) -> None:
        with self._lock:
            self._resting_until[number] = time.monotonic() + self.rest_s
        later = [n for n in self._awake() if n > number]
        name = replica_name(self.replicas[number])
        log.warning(
            "search database replica %s cannot answer (%s): searching on %s; it is tried again in %g s",
            name,
            _reason(error, self.replicas[number]),
            f"replica {replica_name(self.replicas[later[0]])}" if later else "the primary",
            self.rest_s,
        )


def replica_name(engine: Engine) -> str:
    """The replica's URL, its password hidden."""
    return engine.url.render_as_string(hide_password=True)


def _in_snapshot(engine: Engine, search: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        conn.execution_options(isolation_level=SNAPSHOT)
        with conn.begin():
            return search(conn)


def _reason(error: Exception, engine: Engine) -> str:
    """The error in one line, from the driver's own message where there is one; never the password."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0] if lines else ''}"
    password = engine.url.password
    return text.replace(str(password), "***") if password else text
