"""The state of the catalogue at a glance: products, embedding work by state, throughput, live workers,
coverage per model, each model's HNSW index, recent errors, and warnings about the indexes.

A worker is live while its heartbeat is recent: a process that was killed simply stops beating, so
"live" is decided by time, not by a flag the dead process would have had to clear.

An index is built with the links the size rule (`ynet_db.search.index_links`) chose for the rows its model
had then; a catalogue that has grown past the rule's next step since gets a warning with the command that
rebuilds it (`ynet-db index rebuild`), as does a model that searches without a valid index or carries an
index an interrupted rebuild left behind (PostgreSQL keeps updating it on every write).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ynet_db.db.tables import JOB_STATES, Model, Product, Worker
from ynet_db.ingestion import jobs
from ynet_db.models.registry import Coverage, coverage
from ynet_db.search.index_links import BY_SIZE, Links, SizeRule
from ynet_db.search.model_index import SEARCHED, IndexState, model_indexes, own_valid_index

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
    index: Links | None = None
    """The links its HNSW index was built with; None when it has no valid index."""


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
    warnings: list[str]

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
                f"{model.embedded}/{self.products} embedded ({share:.0%}){dead}; index {model.index or 'none'}"
            )
        for error in self.recent_errors:
            lines.append(f"error: {error.external_id} ({error.state}, attempt {error.attempts}): {error.error}")
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _minutes(window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return "minute" if minutes == 1 else f"{minutes} minutes"


def catalogue_status(engine: Engine, rule: SizeRule = BY_SIZE) -> CatalogueStatus:
    """The report; `rule` is the size rule the indexes are judged by (the one every build follows)."""
    with Session(engine) as session:
        conn = session.connection()
        products = session.scalar(select(func.count()).select_from(Product)) or 0
        by_state = jobs.counts_by_state(conn)
        models = coverage(conn)
        indexes = model_indexes(conn)
        return CatalogueStatus(
            products=products,
            jobs={state: by_state.get(state, 0) for state in JOB_STATES},
            throughput=[Throughput(window, jobs.done_within(conn, window)) for window in THROUGHPUT_WINDOWS],
            workers=live_workers(session),
            models=[_coverage(model, indexes) for model in models],
            recent_errors=[JobError(*row) for row in jobs.recent_errors(conn, RECENT_ERRORS)],
            warnings=[warning for model in models for warning in index_warnings(model, indexes, rule)],
        )


def live_workers(session: Session) -> list[LiveWorker]:
    rows = session.execute(
        select(Worker.id, Model.version, Worker.device, Worker.jobs_done, Worker.started_at, Worker.last_seen_at)
        .outerjoin(Model, Model.id == Worker.model_id)
        .where(Worker.stopped_at.is_(None), Worker.last_seen_at >= func.now() - LIVE_WITHIN)
        .order_by(Worker.id)
    )
    return [LiveWorker(*row) for row in rows]


def _coverage(row: Coverage, indexes: Sequence[IndexState]) -> ModelCoverage:
    """The registry's own count (`registry.coverage`), so status and promotion agree on what is dead."""
    model, index = row.model, own_valid_index(row.model.id, indexes)
    links = index.links if index else None
    return ModelCoverage(model.name, model.version, model.state, row.embedded, row.dead, links)


def index_warnings(row: Coverage, indexes: Sequence[IndexState], rule: SizeRule) -> list[str]:
    """What is wrong with a model's indexes, each with the command that mends it."""
    model = row.model
    own = [i for i in indexes if i.model_id == model.id]
    command = f"ynet-db index rebuild --model {shlex.quote(model.version)}"
    if any(i.rebuilding for i in own):
        return [f"model {model.version}: its index is being rebuilt now (`ynet-db index rebuild`)"]
    swap_in = not any(i.serving for i in own)  # the swap stopped after dropping the old index (model_index.py)
    warnings = [
        f"model {model.version}: ynet.{i.name} was left by an interrupted rebuild "
        f"({'built, not swapped in' if i.valid else 'invalid'}) and slows every write: "
        f"`{command}` {'swaps it in' if i.valid and swap_in else 'drops it'} and rebuilds the index"
        for i in own
        if not i.serving
    ]
    if model.state not in SEARCHED:
        return warnings
    serving = own_valid_index(model.id, indexes)
    wanted = rule.links(row.embedded)
    if serving is None:
        warnings.append(f"model {model.version} has no valid HNSW index, so searches read every row: `{command}`")
    elif not serving.links.covers(wanted):
        warnings.append(
            f"model {model.version}: its {row.embedded:,} embedded rows have outgrown its index ({serving.links}), "
            f"the size rule chooses {wanted}: "
            f"`{command} --m {wanted.m} --ef-construction {wanted.ef_construction} --element {wanted.element}`"
        )
    return warnings
