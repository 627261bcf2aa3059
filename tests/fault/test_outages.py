"""Outages around a running worker: the broker goes away and comes back, database connections are killed,
PostgreSQL restarts (also when it is the broker, as it is by default)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from worker_processes import (
    PostgresServer,
    RedisServer,
    WorkerProcess,
    attempts_by_sku,
    embeddings_per_product,
    insert_products,
    rows,
    scalar,
    serve_default_model,
    states,
    wait_for,
)

DISPATCH_FAILED = "dispatcher step dispatch failed"
"""What the dispatcher logs when it cannot hand a wake-up to the broker."""


def test_products_inserted_while_the_broker_is_down_are_embedded_when_it_returns(
    engine: Engine, start_worker: Callable[..., WorkerProcess], private_redis: RedisServer, tmp_path: Path
) -> None:
    worker = start_worker(broker=private_redis.url)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 2)
    wait_for(lambda: states(engine) == {"done": 2}, 90, "2 jobs done", worker)

    private_redis.stop()
    seen = worker.log_size()
    insert_products(engine, tmp_path, 4, start=2)  # commits: the jobs are rows, not messages
    # The insert's wake-up reaches the dispatcher, whose send fails: nothing can have claimed the jobs.
    wait_for(lambda: DISPATCH_FAILED in worker.output(seen), 60, "the dispatcher to find the broker down", worker)
    assert states(engine) == {"done": 2, "pending": 4}

    private_redis.start()
    wait_for(lambda: states(engine) == {"done": 6}, 90, "6 jobs done after the broker came back", worker)

    # Restarted under a running worker: it reconnects and keeps consuming.
    private_redis.stop()
    private_redis.start()
    insert_products(engine, tmp_path, 2, start=6)
    wait_for(lambda: states(engine) == {"done": 8}, 90, "8 jobs done after a broker restart", worker)
    assert embeddings_per_product(engine) == [1] * 8
    assert worker.process.poll() is None
    # Exactly once: each job claimed once and completed once (a count only the completing statement writes).
    assert rows(engine, EXACTLY_ONCE) == [(1, 1, 8)]


EXACTLY_ONCE = "SELECT completions, attempts, count(*) FROM ynet.embedding_jobs GROUP BY 1, 2"

# In the select list, not the WHERE clause: there PostgreSQL may call it before it tests `pid <> pg_backend_pid()`.
TERMINATE_OTHERS = """
    SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
WORKER_CONNECTIONS = """
    SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'ynet-worker %'
"""


def terminate_others(engine: Engine) -> set[int]:
    return {int(str(pid)) for pid, terminated in rows(engine, TERMINATE_OTHERS) if terminated}


def a_new_worker_connection(engine: Engine, killed: set[int]) -> set[int]:
    return {int(str(pid)) for (pid,) in rows(engine, WORKER_CONNECTIONS)} - killed


def test_database_connections_killed_mid_batch_leave_a_consistent_state(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # The database is also the broker here, so the Celery consumer loses its connections too.
    worker = start_worker(hooks=True)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 8, prefix=lambda i: "slow-")
    in_progress = "SELECT count(*) FROM ynet.embedding_jobs WHERE state = 'running'"
    wait_for(lambda: scalar(engine, in_progress), 60, "a batch in progress", worker)

    killed: set[int] = set()

    def reconnected() -> set[int]:
        return a_new_worker_connection(engine, killed)

    for _ in range(3):  # during the fetches, then each time the worker has connected again
        killed |= terminate_others(engine)
        wait_for(reconnected, 60, "the worker to connect again", worker)
    assert len(killed) >= 3

    wait_for(lambda: states(engine) == {"done": 8}, 120, "8 jobs done", worker)
    assert embeddings_per_product(engine) == [1] * 8
    assert rows(engine, "SELECT DISTINCT completions FROM ynet.embedding_jobs") == [(1,)]
    # Every embedding was computed from the image its job names, and the worker reconnected.
    assert scalar(engine, "SELECT count(*) FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id") == 8
    assert rows(engine, "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'ynet-worker %'")
    assert worker.process.poll() is None


RUNNING = (
    "SELECT p.external_id FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
    "WHERE j.state = 'running'"
)


def a_full_batch(engine: Engine) -> set[str] | None:
    """The skus of the running batch once all 4 are claimed (read once, so a later change cannot race it)."""
    batch = {str(sku) for (sku,) in rows(engine, RUNNING)}
    return batch if len(batch) == 4 else None


TASK_FAILED = "raised unexpected"
"""What Celery logs when a task ends in an exception: here, the batch's write to a stopped database."""


@pytest.mark.parametrize("broker", [None, "redis"], ids=["database-broker", "redis-broker"])
def test_a_postgresql_restart_under_a_running_worker_loses_no_job(
    private_postgres: tuple[PostgresServer, URL, Engine],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    broker: str | None,
) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("YNET_TEST_GATE", str(gate))  # each gate-* fetch waits for this file
    server, url, engine = private_postgres
    worker = start_worker(hooks=True, broker=broker, database=url)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 8, prefix=lambda i: "gate-")
    in_hand = wait_for(lambda: a_full_batch(engine), 60, "a batch of 4 in progress", worker)

    seen = worker.log_size()
    server.stop()
    gate.touch()  # the batch in hand goes on to its write, with the database gone
    wait_for(lambda: TASK_FAILED in worker.output(seen), 60, "the batch in hand to fail its write", worker)
    assert server.start() == url
    insert_products(engine, tmp_path, 2, start=8)  # work made after the restart is picked up too

    wait_for(lambda: states(engine) == {"done": 10}, 180, "10 jobs done after the restart", worker)
    assert embeddings_per_product(engine) == [1] * 10
    # The failed task's jobs are not renewed by the beating process: their lease runs out, the sweep hands
    # them back, and each is claimed once more; every job is completed exactly once.
    attempts = attempts_by_sku(engine)
    assert {sku: attempts.pop(sku) for sku in in_hand} == dict.fromkeys(in_hand, 2)
    assert set(attempts.values()) == {1}
    assert rows(engine, "SELECT DISTINCT completions FROM ynet.embedding_jobs") == [(1,)]
    assert worker.process.poll() is None
