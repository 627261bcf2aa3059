"""The embedding queue in PostgreSQL: claim, complete, fail, sweep and re-drive; the one owner of every
statement on `ynet.embedding_jobs` (besides the triggers that record work, which are migrations).

The truth lives in `ynet.embedding_jobs`; a broker only carries wake-ups. Workers claim with
`FOR UPDATE SKIP LOCKED` and a lease, so two workers never hold one job and a dead worker's jobs come
back when the lease expires. Each failure is recorded, retried with exponential backoff, and a job
that keeps failing ends `dead` instead of blocking the queue.

A live worker renews the leases of the jobs a task of its is working on (`InHand`), and only those: a
task that died leaves its jobs to their lease and the sweep. A job a stopping worker never got to is
released, not failed: it goes back to the queue with its attempt given back.

Besides the workers' protocol, the registry queues and drops a model's work here (`backfill`,
`supersede`), the dispatcher counts ready work (`ready_by_model`), and the operator's views read the
queue here (`backlog`, `recent`, `counts_by_state`, `done_within`, `recent_errors`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, text

from ynet_db.db.vectors import vector_text

CHANNEL = "ynet_embedding_jobs"
"""The NOTIFY channel that wakes dispatchers. Migration 0001's trigger sends on it under this name, as a
literal (a migration is history); a test checks that the two agree."""
DEFAULT_LEASE = timedelta(minutes=5)
"""How long a claimed job stays its worker's; a dead worker's jobs return after it (`ynet-db worker --lease`)."""
DEFAULT_BATCH_SIZE = 16
"""Jobs a worker claims per forward pass; the dispatcher sends one task per this many ready jobs."""
OPEN_STATES = "('pending', 'retry', 'running')"
"""The states of a job that will still be worked on, as SQL."""
CURRENT_EMBEDDING = "e.created_at >= p.content_changed_at"
"""Embedding `e` of product `p` was written since the product's image or tags last changed (migration 0013), as
SQL; an older one is stale, as a retired model's is for what changed while it was retired. One written in the
same transaction as its product counts as current."""
JOB_FOR_CONTENT = "p.image_uri = j.image_uri AND p.tags = j.tags AND p.image_sha256 IS NOT DISTINCT FROM j.image_sha256"
"""Job `j` was made for product `p`'s image and tags as they are now, as SQL."""
BACKOFF_BASE = timedelta(seconds=2)
BACKOFF_CAP = timedelta(minutes=30)
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    product_id: int
    model_id: int
    image_uri: str
    image_sha256: str | None
    tags: list[str]
    attempts: int
    max_attempts: int


NOTIFY = text("SELECT pg_notify(:channel, '')")


def notify(conn: Connection) -> None:
    """Wake the dispatchers at this transaction's commit (new or returned work), as the triggers do."""
    conn.execute(NOTIFY, {"channel": CHANNEL})


CLAIM = text(
    """
    UPDATE ynet.embedding_jobs AS j
       SET state = 'running', attempts = j.attempts + 1, claimed_by = :worker,
           lease_expires_at = now() + :lease, updated_at = now()
     WHERE j.id IN (SELECT id FROM ynet.embedding_jobs
                     WHERE state IN ('pending', 'retry') AND run_after <= now()
                       AND (state = 'pending' OR NOT :first)
                       AND (CAST(:model_id AS integer) IS NULL OR model_id = :model_id)
                     ORDER BY run_after, id
                     LIMIT :limit
                     FOR UPDATE SKIP LOCKED)
    RETURNING j.id, j.product_id, j.model_id, j.image_uri, j.image_sha256, j.tags, j.attempts, j.max_attempts
    """
)


def claim(
    engine: Engine,
    worker: str,
    limit: int,
    *,
    lease: timedelta = DEFAULT_LEASE,
    model_id: int | None = None,
    first_attempts_only: bool = False,
) -> list[ClaimedJob]:
    """Take up to `limit` ready jobs for `worker` until the lease expires (with `first_attempts_only`,
    only jobs never tried: no failed or expired one)."""
    params = {"worker": worker, "lease": lease, "limit": limit, "model_id": model_id, "first": first_attempts_only}
    with engine.begin() as conn:
        rows = conn.execute(CLAIM, params)
        return sorted((ClaimedJob(*row) for row in rows), key=lambda job: job.id)


# A batch's embeddings are written in one statement and one transaction: per job, only while it is
# still this worker's and the product still shows the image and tags it was made for, so a late,
# superseded or re-claimed job changes nothing. One commit per batch instead of one per job keeps the
# database's share of a worker's time small; a crash before the commit loses the batch's writes and
# its 'done' marks together, and the lease brings the jobs back.
COMPLETE = text(
    f"""
    WITH finished AS (
        SELECT * FROM unnest(CAST(:job_ids AS bigint[]), CAST(:hashes AS text[]), CAST(:embeddings AS text[]))
                   AS f(job_id, image_sha256, embedding)
    ), current AS (
        SELECT j.id, j.product_id, j.model_id, f.image_sha256, f.embedding
          FROM ynet.embedding_jobs j
          JOIN finished f ON f.job_id = j.id
          JOIN ynet.products p ON p.id = j.product_id
         WHERE j.state = 'running' AND j.claimed_by = :worker AND {JOB_FOR_CONTENT}
           FOR UPDATE OF j
    ), job AS (  -- one row per embedding: the newest job, should one batch ever hold two for a product
        SELECT DISTINCT ON (product_id, model_id) * FROM current ORDER BY product_id, model_id, id DESC
    ), written AS (
        INSERT INTO ynet.embeddings (product_id, model_id, image_sha256, embedding)
        SELECT product_id, model_id, image_sha256, CAST(embedding AS vector) FROM job
        ON CONFLICT (product_id, model_id) DO UPDATE
           SET image_sha256 = EXCLUDED.image_sha256, embedding = EXCLUDED.embedding, created_at = now()
        RETURNING product_id, model_id
    )
    UPDATE ynet.embedding_jobs j
       SET state = 'done', finished_at = now(), updated_at = now(), lease_expires_at = NULL, last_error = NULL,
           completions = j.completions + 1  -- only here: a job finished twice shows 2 (tests count on it)
      FROM job JOIN written USING (product_id, model_id)
     WHERE j.id = job.id
    RETURNING j.id
    """
)

RELEASE_STALE = text(
    """
    UPDATE ynet.embedding_jobs
       SET state = 'superseded', finished_at = now(), updated_at = now(), lease_expires_at = NULL
     WHERE id = ANY(CAST(:job_ids AS bigint[])) AND state = 'running' AND claimed_by = :worker
    """
)


@dataclass(frozen=True)
class Finished:
    """A job's embedding, ready to be written."""

    job: ClaimedJob
    embedding: Sequence[float] | np.ndarray
    image_sha256: str


def complete_batch(engine: Engine, worker: str, finished: Sequence[Finished]) -> set[int]:
    """Write the embeddings and mark their jobs done, in one transaction; returns the ids done. A job that
    was no longer this worker's to finish is marked superseded (if still this worker's) and left out."""
    if not finished:
        return set()
    params = {
        "worker": worker,
        "job_ids": [item.job.id for item in finished],
        "hashes": [item.image_sha256 for item in finished],
        "embeddings": [vector_text(item.embedding) for item in finished],
    }
    with engine.begin() as conn:
        done = {int(row[0]) for row in conn.execute(COMPLETE, params)}
        stale = [item.job.id for item in finished if item.job.id not in done]
        if stale:
            conn.execute(RELEASE_STALE, {"job_ids": stale, "worker": worker})
        return done


def complete(engine: Engine, job: ClaimedJob, worker: str, embedding: Sequence[float], image_sha256: str) -> bool:
    """One job's `complete_batch`: False if the job was no longer this worker's to finish."""
    return job.id in complete_batch(engine, worker, [Finished(job, embedding, image_sha256)])


FAIL = text(
    """
    UPDATE ynet.embedding_jobs
       SET state = CASE WHEN :permanent OR attempts >= max_attempts THEN 'dead' ELSE 'retry' END,
           run_after = now() + :backoff, last_error = :error, updated_at = now(), lease_expires_at = NULL,
           finished_at = CASE WHEN :permanent OR attempts >= max_attempts THEN now() END
     WHERE id = :job_id AND state = 'running' AND claimed_by = :worker
    RETURNING state
    """
)


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with jitter, so a burst of failures does not come back as a burst."""
    doublings: int = 2 ** max(attempts - 1, 0)
    delay = min(BACKOFF_BASE * doublings, BACKOFF_CAP)
    jitter: float = (rng or random).random()
    return delay * (0.5 + jitter / 2)


def fail(engine: Engine, job: ClaimedJob, worker: str, error: str, *, permanent: bool = False) -> str | None:
    """Record a failure: 'retry' after a backoff, or 'dead' when attempts are spent or it can never work."""
    params: dict[str, Any] = {
        "job_id": job.id,
        "worker": worker,
        "error": error[:MAX_ERROR_LENGTH],
        "permanent": permanent,
        "backoff": backoff(job.attempts),
    }
    with engine.begin() as conn:
        row = conn.execute(FAIL, params).first()
    return None if row is None else str(row[0])


class InHand:
    """The jobs one task is working on: claimed, and not yet written, failed or released.

    Its worker's heartbeat renews these leases alone, so when a task dies its jobs' leases run out and
    the sweep returns them, while the process (and its heartbeat) lives on. Thread-safe: the writer
    thread drops the jobs it wrote while the heartbeat thread reads.
    """

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._lock = threading.Lock()

    def hold(self, job_ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.update(job_ids)

    def drop(self, job_ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.difference_update(job_ids)

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)


RENEW = text(
    """
    UPDATE ynet.embedding_jobs SET lease_expires_at = now() + :lease
     WHERE id = ANY(CAST(:job_ids AS bigint[])) AND state = 'running' AND claimed_by = :worker
       AND lease_expires_at > now()
    RETURNING id
    """
)


def renew(engine: Engine, worker: str, job_ids: Sequence[int], lease: timedelta = DEFAULT_LEASE) -> int:
    """Extend the leases of the jobs named, while they are still `worker`'s, so a batch slower than its
    lease is not claimed twice.

    Only unexpired leases are extended: a job the sweep may already have handed on stays handed on.
    """
    if not job_ids:
        return 0
    with engine.begin() as conn:
        params = {"worker": worker, "lease": lease, "job_ids": list(job_ids)}
        return len(conn.execute(RENEW, params).all())


# The claim counted an attempt that never ran: give it back, so a warm shutdown costs a job nothing.
RELEASE = text(
    """
    UPDATE ynet.embedding_jobs
       SET state = CASE WHEN attempts <= 1 THEN 'pending' ELSE 'retry' END, attempts = greatest(attempts - 1, 0),
           run_after = now(), lease_expires_at = NULL, updated_at = now()
     WHERE id = ANY(CAST(:job_ids AS bigint[])) AND state = 'running' AND claimed_by = :worker
    RETURNING id
    """
)


def release(engine: Engine, worker: str, job_ids: Sequence[int]) -> int:
    """Hand claimed jobs back to the queue unattempted (the worker stops before working on them)."""
    if not job_ids:
        return 0
    with engine.begin() as conn:
        released = len(conn.execute(RELEASE, {"worker": worker, "job_ids": list(job_ids)}).all())
        if released:
            notify(conn)
        return released


# The lease, not this statement, hands the jobs back: the task that held them died, and whatever killed
# it (a lost database, a bug) may stop this write too. The sweep appends its own note to this one.
NOTE_ERROR = text(
    """
    UPDATE ynet.embedding_jobs SET last_error = :error, updated_at = now()
     WHERE id = ANY(CAST(:job_ids AS bigint[])) AND state = 'running' AND claimed_by = :worker
    """
)


def note_error(engine: Engine, worker: str, job_ids: Sequence[int], error: str) -> None:
    """Record why running jobs were abandoned; they stay `running` until their lease runs out."""
    if job_ids:
        with engine.begin() as conn:
            conn.execute(NOTE_ERROR, {"worker": worker, "job_ids": list(job_ids), "error": error[:MAX_ERROR_LENGTH]})


SWEEP = text(
    """
    UPDATE ynet.embedding_jobs
       SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'retry' END,
           last_error = coalesce(last_error || ' / ', '') || 'lease expired on ' || coalesce(claimed_by, '?'),
           finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
           lease_expires_at = NULL, updated_at = now()
     WHERE state = 'running' AND lease_expires_at < now()
    RETURNING id
    """
)


def sweep(engine: Engine) -> int:
    """Return jobs whose worker died (lease expired) to the queue; count them."""
    with engine.begin() as conn:
        return len(conn.execute(SWEEP).all())


REDRIVE = text(
    """
    UPDATE ynet.embedding_jobs
       SET state = 'pending', attempts = 0, run_after = now(), finished_at = NULL, updated_at = now()
     WHERE state = 'dead' AND (CAST(:job_ids AS integer[]) IS NULL OR id = ANY(:job_ids))
    RETURNING id
    """
)


def redrive(engine: Engine, job_ids: Sequence[int] | None = None) -> int:
    """Give dead jobs (all, or those named) a fresh set of attempts; the last error stays for reference."""
    with engine.begin() as conn:
        count = len(conn.execute(REDRIVE, {"job_ids": list(job_ids) if job_ids is not None else None}).all())
        if count:
            notify(conn)
        return count


# -- a model's work: queued by the registry when it is activated, dropped when it is replaced ---------

# Products without a current embedding under the model (none, or a stale one: the triggers record no work
# for a retired or registered model, so what changed meanwhile is found here) and not already queued for
# their content as it is now. An open job for older content is a running one (a change supersedes the
# queued ones); its write will be refused, so it does not count.
BACKFILL = text(
    f"""
    INSERT INTO ynet.embedding_jobs (product_id, model_id, image_uri, image_sha256, tags)
    SELECT p.id, :model_id, p.image_uri, p.image_sha256, p.tags
      FROM ynet.products p
     WHERE NOT EXISTS (SELECT 1 FROM ynet.embeddings e
                        WHERE e.product_id = p.id AND e.model_id = :model_id AND {CURRENT_EMBEDDING})
       AND NOT EXISTS (SELECT 1 FROM ynet.embedding_jobs j
                        WHERE j.product_id = p.id AND j.model_id = :model_id AND j.state IN {OPEN_STATES}
                          AND {JOB_FOR_CONTENT})
    """
)
SUPERSEDE = text(
    """
    UPDATE ynet.embedding_jobs SET state = 'superseded', finished_at = now(), updated_at = now()
     WHERE model_id = ANY(:model_ids) AND state IN ('pending', 'retry')
    """
)


def backfill(conn: Connection, model_id: int) -> int:
    """Queue a job for every product the model has neither embedded since its last image or tag change nor
    queued (in the caller's transaction, which holds the locks that keep products from slipping between);
    wakes the dispatchers."""
    queued = conn.execute(BACKFILL, {"model_id": model_id}).rowcount
    if queued:
        notify(conn)
    return int(queued)


def supersede(conn: Connection, model_ids: Sequence[int]) -> int:
    """Drop the queued (not running) jobs of models that no longer need them; count them."""
    return int(conn.execute(SUPERSEDE, {"model_ids": list(model_ids)}).rowcount)


# -- reading the queue: the dispatcher, coverage, the operator's views --------------------------------

READY_BY_MODEL = text(
    """
    SELECT model_id, count(*) FROM ynet.embedding_jobs
     WHERE state IN ('pending', 'retry') AND run_after <= now()
     GROUP BY model_id
    """
)


def ready_by_model(engine: Engine) -> list[tuple[int, int]]:
    """(model id, jobs ready to claim now) for each model with any."""
    with engine.connect() as conn:
        return [(int(model_id), int(count)) for model_id, count in conn.execute(READY_BY_MODEL)]


@dataclass(frozen=True)
class Backlog:
    open: int
    """Jobs that will still be worked on (pending, retry, running)."""
    dead: int
    """Products given up on: no current embedding, no open job, and a dead job. They wait for an operator
    (`ynet-db jobs list --state dead`, then `jobs retry`)."""


BACKLOG = text(
    f"""
    SELECT m.id,
           (SELECT count(*) FROM ynet.embedding_jobs j WHERE j.model_id = m.id AND j.state IN {OPEN_STATES}),
           -- From the dead jobs, which are few, rather than from every product.
           (SELECT count(DISTINCT d.product_id) FROM ynet.embedding_jobs d
             WHERE d.model_id = m.id AND d.state = 'dead'
               AND NOT EXISTS (SELECT 1 FROM ynet.embedding_jobs j WHERE j.product_id = d.product_id
                                  AND j.model_id = m.id AND j.state IN {OPEN_STATES})
               AND NOT EXISTS (SELECT 1 FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id
                                WHERE e.product_id = d.product_id AND e.model_id = m.id AND {CURRENT_EMBEDDING}))
      FROM unnest(CAST(:model_ids AS integer[])) AS m(id)
    """
)


def backlog(conn: Connection, model_ids: Sequence[int]) -> dict[int, Backlog]:
    """Each model's open jobs and dead products."""
    rows = conn.execute(BACKLOG, {"model_ids": list(model_ids)})
    return {int(model_id): Backlog(int(open_), int(dead)) for model_id, open_, dead in rows}


RECENT = text(
    """
    SELECT j.id, p.source, p.external_id, m.version, j.state, j.attempts, j.max_attempts, j.updated_at, j.last_error
      FROM ynet.embedding_jobs j
      JOIN ynet.products p ON p.id = j.product_id
      JOIN ynet.models m ON m.id = j.model_id
     WHERE (CAST(:state AS text) IS NULL OR j.state = :state)
       AND (CAST(:model_id AS integer) IS NULL OR j.model_id = :model_id)
     ORDER BY j.updated_at DESC, j.id DESC
     LIMIT :limit
    """
)


def recent(conn: Connection, *, state: str | None, model_id: int | None, limit: int) -> list[tuple[Any, ...]]:
    """The `limit` most recently changed jobs (in `state`, of `model_id`, when given): id, the product's
    source and external id, the model version, state, attempts, max attempts, updated at, last error."""
    return [tuple(row) for row in conn.execute(RECENT, {"state": state, "model_id": model_id, "limit": limit})]


COUNTS_BY_STATE = text("SELECT state, count(*) FROM ynet.embedding_jobs GROUP BY state")
DONE_WITHIN = text("SELECT count(*) FROM ynet.embedding_jobs WHERE state = 'done' AND finished_at >= now() - :window")
RECENT_ERRORS = text(
    """
    SELECT p.external_id, j.state, j.attempts, j.last_error
      FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id
     WHERE j.last_error IS NOT NULL
     ORDER BY j.updated_at DESC
     LIMIT :limit
    """
)


def counts_by_state(conn: Connection) -> dict[str, int]:
    """Jobs per state, for the states that have any."""
    return {str(state): int(count) for state, count in conn.execute(COUNTS_BY_STATE)}


def done_within(conn: Connection, window: timedelta) -> int:
    """Jobs finished in the last `window`, by the database's clock: workers and readers may run on
    different hosts."""
    return int(conn.execute(DONE_WITHIN, {"window": window}).scalar_one())


def recent_errors(conn: Connection, limit: int) -> list[tuple[Any, ...]]:
    """The `limit` most recently changed jobs with an error: external id, state, attempts, the error."""
    return [tuple(row) for row in conn.execute(RECENT_ERRORS, {"limit": limit})]
