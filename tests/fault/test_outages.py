"""Outages around a running worker: the broker goes away and comes back, database connections are killed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from worker_processes import (
    RedisServer,
    WorkerProcess,
    embeddings_per_product,
    insert_products,
    rows,
    scalar,
    serve_default_model,
    states,
    wait_for,
)


def test_products_inserted_while_the_broker_is_down_are_embedded_when_it_returns(
    engine: Engine, start_worker: Callable[..., WorkerProcess], private_redis: RedisServer, tmp_path: Path
) -> None:
    worker = start_worker(broker=private_redis.url)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 2)
    wait_for(lambda: states(engine) == {"done": 2}, 90, "2 jobs done", worker)

    private_redis.stop()
    insert_products(engine, tmp_path, 4, start=2)  # commits: the jobs are rows, not messages
    time.sleep(3)
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

TERMINATE_OTHERS = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


def test_database_connections_killed_mid_batch_leave_a_consistent_state(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # The database is also the broker here, so the Celery consumer loses its connections too.
    worker = start_worker(hooks=True)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 8, prefix=lambda i: "slow-")
    in_progress = "SELECT count(*) FROM ynet.embedding_jobs WHERE state = 'running'"
    wait_for(lambda: scalar(engine, in_progress), 60, "a batch in progress", worker)

    killed = 0
    for _ in range(3):  # during the fetches, the writes and the next claim
        killed += int(str(scalar(engine, TERMINATE_OTHERS)))
        time.sleep(1.0)
    assert killed >= 3

    wait_for(lambda: states(engine) == {"done": 8}, 120, "8 jobs done", worker)
    assert embeddings_per_product(engine) == [1] * 8
    assert rows(engine, "SELECT DISTINCT completions FROM ynet.embedding_jobs") == [(1,)]
    # Every embedding was computed from the image its job names, and the worker reconnected.
    assert scalar(engine, "SELECT count(*) FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id") == 8
    assert rows(engine, "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'ynet-worker %'")
    assert worker.process.poll() is None
