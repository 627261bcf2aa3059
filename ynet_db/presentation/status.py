"""The state of the catalogue at a glance: products, embedding work by state, throughput, live workers,
coverage per model and recent errors.

A worker is live while its heartbeat is recent: a process that was killed simply stops beating, so
"live" is decided by time, not by a flag the dead process would have had to clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ynet_db.db.tables import JOB_STATES, Model, Product, Worker
from ynet_db.ingestion import jobs
from ynet_db.models.registry import coverage

RECENT_ERRORS = 5
HEARTBEAT_INTERVAL = timedelta(seconds=5)
"""How often a worker process beats (workers/heartbeat.py); it also beats after each batch."""
LIVE_WITHIN = 3 * HEARTBEAT_INTERVAL
"""A worker whose last beat is older than this is taken for dead: two beats may be late, not three."""
THROUGHPUT_WINDOWS = (timedelta(minutes=1), timedelta(minutes=5))


@dataclass(frozen=True)
class ModelCoverage:
    name: str
    version: str
    state: str
    embedded: int
    dead: int
    """Products without an embedding under the model whose job is dead (`ynet-db jobs list --state dead`)."""


@dataclass(frozen=True)
class JobError:
    external_id: str
    state: str
    attempts: int
    error: str


@dataclass(frozen=True)
class LiveWorker:
    id: str
    model_version: str | None
    device: str
    jobs_done: int
    started_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class Throughput:
    window: timedelta
    jobs_done: int

    @property
    def per_second(self) -> float:
        return self.jobs_done / self.window.total_seconds()

    def __str__(self) -> str:
        return f"{self.jobs_done} in the last {_minutes(self.window)} ({self.per_second:.2f}/s)"


@dataclass(frozen=True)
class CatalogueStatus:
    products: int
    jobs: dict[str, int]
    throughput: list[Throughput]
    workers: list[LiveWorker]
    models: list[ModelCoverage]
    recent_errors: list[JobError]

    def __str__(self) -> str:
        lines = [f"products: {self.products}"]
        jobs = ", ".join(f"{n} {state}" for state, n in self.jobs.items() if n)
        lines.append(f"jobs: {jobs or 'none'}")
        lines.append("done: " + ", ".join(str(t) for t in self.throughput))
        lines.append(f"live workers: {len(self.workers)}")
        for worker in self.workers:
            lines.append(
                f"worker {worker.id} ({worker.device}, model {worker.model_version or '?'}): "
                f"{worker.jobs_done} done, last seen {worker.last_seen_at:%H:%M:%S}"
            )
        if not self.models:
            lines.append("models: none registered")
        for model in self.models:
            share = model.embedded / self.products if self.products else 0.0
            dead = f", {model.dead} dead" if model.dead else ""
            lines.append(
                f"model {model.name} ({model.version}, {model.state}): "
                f"{model.embedded}/{self.products} embedded ({share:.0%}){dead}"
            )
        for error in self.recent_errors:
            lines.append(f"error: {error.external_id} ({error.state}, attempt {error.attempts}): {error.error}")
        return "\n".join(lines)


def _minutes(window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return "minute" if minutes == 1 else f"{minutes} minutes"


def catalogue_status(engine: Engine) -> CatalogueStatus:
    with Session(engine) as session:
        conn = session.connection()
        products = session.scalar(select(func.count()).select_from(Product)) or 0
        by_state = jobs.counts_by_state(conn)
        return CatalogueStatus(
            products=products,
            jobs={state: by_state.get(state, 0) for state in JOB_STATES},
            throughput=[Throughput(window, jobs.done_within(conn, window)) for window in THROUGHPUT_WINDOWS],
            workers=live_workers(session),
            models=_coverage(session),
            recent_errors=[JobError(*row) for row in jobs.recent_errors(conn, RECENT_ERRORS)],
        )


def live_workers(session: Session) -> list[LiveWorker]:
    rows = session.execute(
        select(Worker.id, Model.version, Worker.device, Worker.jobs_done, Worker.started_at, Worker.last_seen_at)
        .outerjoin(Model, Model.id == Worker.model_id)
        .where(Worker.stopped_at.is_(None), Worker.last_seen_at >= func.now() - LIVE_WITHIN)
        .order_by(Worker.id)
    )
    return [LiveWorker(*row) for row in rows]


def _coverage(session: Session) -> list[ModelCoverage]:
    """The registry's own count (`registry.coverage`), so status and promotion agree on what is dead."""
    return [
        ModelCoverage(row.model.name, row.model.version, row.model.state, row.embedded, row.dead)
        for row in coverage(session.connection())
    ]
