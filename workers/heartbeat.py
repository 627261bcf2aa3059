"""A worker process's heartbeat: its row in `ynet.workers`, refreshed every few seconds and after each batch.

`ynet-db status` counts a worker as live while its last beat is recent (`ynet_db.presentation.status.LIVE_WITHIN`),
so a SIGKILLed process drops out by itself; a clean exit marks the row stopped at once. The row's
`pid` is the process that built the engine and the model, and its id is `host/pid` of the process
that beats: the two agree only when nothing was inherited across a fork.

A beat that cannot reach the database is logged and skipped: a database outage must not take the
worker down with it, and the next beat repairs the row.

Each beat also renews the leases of the jobs that a live task of this process holds (`holding`), and
of no other job: a task that died by an exception leaves its jobs to their lease and the sweep, while
the process beats on. It beats at least three times per lease, so a live task never loses one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, TextClause, text
from sqlalchemy.exc import DBAPIError

from ynet_db.ingestion import jobs
from ynet_db.presentation.status import HEARTBEAT_INTERVAL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerIdentity:
    id: str
    """host/pid, as written into `embedding_jobs.claimed_by`."""
    hostname: str
    pid: int
    model_id: int
    device: str


# A pid can be reused after a reboot or on another container: a new process starts its row afresh.
REGISTER = text(
    """
    INSERT INTO ynet.workers (id, hostname, pid, model_id, device)
    VALUES (:id, :hostname, :pid, :model_id, :device)
    ON CONFLICT (id) DO UPDATE
       SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, model_id = EXCLUDED.model_id,
           device = EXCLUDED.device, started_at = now(), last_seen_at = now(), jobs_done = 0, stopped_at = NULL
    """
)
BEAT = text("UPDATE ynet.workers SET last_seen_at = now(), jobs_done = :jobs_done WHERE id = :id")
STOP = text("UPDATE ynet.workers SET last_seen_at = now(), jobs_done = :jobs_done, stopped_at = now() WHERE id = :id")


class Heartbeat:
    """Beats from a daemon thread of the worker process; `add_done` beats at once with the new count."""

    def __init__(
        self, engine: Engine, identity: WorkerIdentity, interval_s: float | None = None, lease: timedelta | None = None
    ) -> None:
        self.engine = engine
        self.identity = identity
        self.lease = lease
        self.interval_s = interval_s or HEARTBEAT_INTERVAL.total_seconds()
        if lease is not None:
            self.interval_s = min(self.interval_s, lease.total_seconds() / 3)
        self.jobs_done = 0
        self._held: list[jobs.InHand] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ynet-heartbeat", daemon=True)

    def start(self) -> None:
        self._write(REGISTER, self.identity.__dict__)
        self._thread.start()

    def add_done(self, count: int) -> None:
        with self._lock:
            self.jobs_done += count
        self.beat()

    @contextmanager
    def holding(self) -> Iterator[jobs.InHand]:
        """The jobs a task works on, renewed by each beat until the task leaves the `with`."""
        in_hand = jobs.InHand()
        with self._lock:
            self._held.append(in_hand)
        try:
            yield in_hand
        finally:
            with self._lock:
                self._held.remove(in_hand)

    def beat(self) -> None:
        self._write(BEAT, {"id": self.identity.id, "jobs_done": self.jobs_done})
        if self.lease is not None:
            with self._lock:
                job_ids = sorted({job_id for in_hand in self._held for job_id in in_hand.ids()})
            if job_ids:
                self._renew(job_ids, self.lease)

    def stop(self) -> None:
        """Mark the row stopped: a clean exit, as opposed to a heartbeat that just ceases."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(self.interval_s)
        self._write(STOP, {"id": self.identity.id, "jobs_done": self.jobs_done})

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.beat()

    def _renew(self, job_ids: list[int], lease: timedelta) -> None:
        self._guarded("leases", lambda: jobs.renew(self.engine, self.identity.id, job_ids, lease))

    def _write(self, statement: TextClause, params: dict[str, object]) -> None:
        self._guarded("heartbeat", lambda: self._execute(statement, params))

    def _execute(self, statement: TextClause, params: dict[str, object]) -> None:
        with self.engine.begin() as conn:
            conn.execute(statement, params)

    def _guarded(self, what: str, write: Callable[[], object]) -> None:
        """A write that cannot reach the database is logged and skipped; the next beat repeats it."""
        with self._lock:
            try:
                write()
            except DBAPIError as error:
                log.warning("%s of %s not written: %s", what, self.identity.id, error.orig or error)
