"""The search request queue in PostgreSQL: claim, answer, fail, release, expire and clean up.

The table and its rules are migration 0010's. A worker claims requests with `FOR UPDATE SKIP LOCKED`
under a lease, so two workers never hold one request and a dead worker's requests are claimed again
once its lease has passed. Every write of an outcome is guarded by `state = 'running' AND claimed_by =
me`: a worker whose lease passed and whose request another worker took can no longer answer it, so a
request is answered once. A claim counts an attempt; a request whose workers all stopped before
answering is failed after `max_attempts`, never retried forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, text

from ynet_db.search.query import SearchResult

DEFAULT_LEASE = timedelta(seconds=30)
DEFAULT_RETENTION = timedelta(hours=1)
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class ClaimedRequest:
    id: int
    image: bytes | None
    image_url: str | None
    k: int
    filters: Any
    """The jsonb as the client wrote it: not checked yet (any JSON value)."""
    attempts: int


CLAIM = text(
    """
    UPDATE ynet.search_requests AS r
       SET state = 'running', attempts = r.attempts + 1, claimed_by = :worker, lease_expires_at = now() + :lease
     WHERE r.id IN (SELECT id FROM ynet.search_requests
                     WHERE state IN ('pending', 'running')
                       AND (state = 'pending' OR lease_expires_at < now())
                       AND expires_at > now() AND attempts < max_attempts
                     ORDER BY id
                     LIMIT :limit
                     FOR UPDATE SKIP LOCKED)
    RETURNING r.id, r.image, r.image_url, r.k, r.filters, r.attempts
    """
)


def claim(engine: Engine, worker: str, limit: int, lease: timedelta = DEFAULT_LEASE) -> list[ClaimedRequest]:
    """Take up to `limit` open requests, oldest first, for `worker` until the lease passes."""
    with engine.begin() as conn:
        rows = conn.execute(CLAIM, {"worker": worker, "lease": lease, "limit": limit})
        return sorted((ClaimedRequest(*row) for row in rows), key=lambda request: request.id)


MARK_DONE = text(
    """
    UPDATE ynet.search_requests
       SET state = 'done', finished_at = now(), lease_expires_at = NULL, error = NULL,
           answers = answers + 1,  -- only here: a request answered twice shows 2 (tests count on it)
           model_version = :model_version, path = :path, short = :short, reranked = :reranked
     WHERE id = :id AND state = 'running' AND claimed_by = :worker
    RETURNING id
    """
)

WRITE_ROWS = text(
    """
    INSERT INTO ynet.search_results
           (request_id, rank, product_id, external_id, title, category, distance, rerank_score)
    SELECT :id, r.rank, r.product_id, r.external_id, r.title, r.category, r.distance, r.rerank_score
      FROM unnest(CAST(:ranks AS integer[]), CAST(:product_ids AS integer[]), CAST(:external_ids AS text[]),
                  CAST(:titles AS text[]), CAST(:categories AS text[]), CAST(:distances AS float8[]),
                  CAST(:scores AS float8[]))
           AS r(rank, product_id, external_id, title, category, distance, rerank_score)
    """
)


def answer(engine: Engine, worker: str, answers: Sequence[tuple[int, SearchResult]]) -> list[int]:
    """Write each request's result rows and mark it done, in one transaction; returns the ids answered
    (a request no longer this worker's is skipped: another worker holds or answered it)."""
    answered: list[int] = []
    with engine.begin() as conn:
        for request_id, result in answers:
            marked = conn.execute(MARK_DONE, _outcome(request_id, worker, result)).first()
            if marked is None:
                continue
            conn.execute(WRITE_ROWS, _rows(request_id, result))
            answered.append(request_id)
    return answered


def _outcome(request_id: int, worker: str, result: SearchResult) -> dict[str, Any]:
    return {
        "id": request_id,
        "worker": worker,
        "model_version": result.model_version,
        "path": result.path,
        "short": result.short,
        "reranked": result.reranked,
    }


def _rows(request_id: int, result: SearchResult) -> dict[str, Any]:
    rows = result.rows
    return {
        "id": request_id,
        "ranks": [row.rank for row in rows],
        "product_ids": [row.product_id for row in rows],
        "external_ids": [row.external_id for row in rows],
        "titles": [row.title for row in rows],
        "categories": [row.category for row in rows],
        "distances": [row.distance for row in rows],
        "scores": [row.rerank_score for row in rows],
    }


FAIL = text(
    """
    UPDATE ynet.search_requests
       SET state = 'failed', error = :error, finished_at = now(), lease_expires_at = NULL
     WHERE id = :id AND state = 'running' AND claimed_by = :worker
    RETURNING id
    """
)


def fail(engine: Engine, worker: str, failures: Sequence[tuple[int, str]]) -> list[int]:
    """Mark requests failed with their error text (the answer: a bad image stays bad, so no retry)."""
    failed: list[int] = []
    with engine.begin() as conn:
        for request_id, error in failures:
            row = conn.execute(FAIL, {"id": request_id, "worker": worker, "error": error[:MAX_ERROR_LENGTH]}).first()
            if row is not None:
                failed.append(request_id)
    return failed


RELEASE = text(
    """
    UPDATE ynet.search_requests
       SET state = 'pending', claimed_by = NULL, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0)
     WHERE id = ANY(CAST(:ids AS bigint[])) AND state = 'running' AND claimed_by = :worker
    """
)


def release(engine: Engine, worker: str, request_ids: Sequence[int]) -> int:
    """Hand requests back unanswered, their attempt given back (a stopping worker's): another worker
    takes them at once instead of after the lease."""
    with engine.begin() as conn:
        return conn.execute(RELEASE, {"ids": list(request_ids), "worker": worker}).rowcount


# A running request is expired or given up only once its lease has passed: until then its worker may
# still answer it, and the client is better served late than not at all. Every search worker sweeps; rows
# another one is sweeping (or answering) are skipped, not waited for.
EXPIRE = text(
    """
    UPDATE ynet.search_requests
       SET state = 'expired', finished_at = now(), lease_expires_at = NULL
     WHERE id IN (SELECT id FROM ynet.search_requests
                   WHERE state IN ('pending', 'running') AND expires_at <= now()
                     AND (state = 'pending' OR lease_expires_at < now())
                     FOR UPDATE SKIP LOCKED)
    """
)

GIVE_UP = text(
    """
    UPDATE ynet.search_requests
       SET state = 'failed', finished_at = now(), lease_expires_at = NULL,
           error = format('given up after %s attempts: every worker that took it stopped before answering', attempts)
     WHERE id IN (SELECT id FROM ynet.search_requests
                   WHERE state = 'running' AND lease_expires_at < now() AND attempts >= max_attempts
                     FOR UPDATE SKIP LOCKED)
    """
)

DELETE_FINISHED = text(
    """
    DELETE FROM ynet.search_requests
     WHERE id IN (SELECT id FROM ynet.search_requests
                   WHERE state IN ('done', 'failed', 'expired') AND finished_at < now() - :retention
                     FOR UPDATE SKIP LOCKED)
    """
)


@dataclass(frozen=True)
class Sweep:
    expired: int
    given_up: int
    deleted: int


def sweep(engine: Engine, retention: timedelta = DEFAULT_RETENTION) -> Sweep:
    """Expire what nobody answered in time, fail what exhausted its attempts, delete finished requests (and
    their results) older than `retention`."""
    with engine.begin() as conn:
        expired = conn.execute(EXPIRE).rowcount
        given_up = conn.execute(GIVE_UP).rowcount
        deleted = conn.execute(DELETE_FINISHED, {"retention": retention}).rowcount
    return Sweep(expired, given_up, deleted)
