"""Stopping a worker: a warm shutdown cuts the fetch in flight, writes what it fetched, hands the rest of
its batch back unattempted and takes no other; a cold one leaves the batch to be re-driven by the next worker."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from worker_processes import (
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

RUNNING = (
    "SELECT p.external_id FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
    "WHERE j.state = 'running' ORDER BY 1"
)


def running(engine: Engine) -> set[str]:
    return {str(sku) for (sku,) in rows(engine, RUNNING)}


def a_full_batch(engine: Engine) -> set[str] | None:
    """The skus of the running batch once all 4 are claimed (read once, so a later change cannot race it)."""
    batch = running(engine)
    return batch if len(batch) == 4 else None


def slow(i: int) -> str:
    return "slow-"


# A batch of 4 slow images takes a few seconds; the lease must outlast it, or the dispatcher's sweep
# hands the batch back to the queue while it still runs.
LEASE = ("--lease", "10")

# A job handed back unattempted is as it was before its claim: no attempt, no completion, no error, no lease.
UNFINISHED = "SELECT attempts, completions, last_error, lease_expires_at FROM ynet.embedding_jobs WHERE state <> 'done'"


def test_a_warm_shutdown_writes_what_it_fetched_and_hands_back_the_rest_unattempted(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker(*LEASE, hooks=True)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 12, prefix=slow)  # a batch of 4 takes about 2 s to fetch
    batch = wait_for(lambda: a_full_batch(engine), 60, "a batch of 4 in progress", worker)

    worker.signal(signal.SIGTERM)
    worker.process.wait(60)

    assert worker.process.returncode == 0
    done = {sku for sku, state in job_states(engine).items() if state == "done"}
    assert done and done <= batch, "the fetch in flight was finished and written; no other batch was claimed"
    assert states(engine) == {"done": len(done), "pending": 12 - len(done)}
    assert set(rows(engine, UNFINISHED)) == {(0, 0, None, None)}
    assert rows(
        engine, "SELECT completions, attempts, count(*) FROM ynet.embedding_jobs WHERE state = 'done' GROUP BY 1, 2"
    ) == [(1, 1, len(done))]
    assert scalar(engine, "SELECT count(*) FROM ynet.workers WHERE stopped_at IS NULL") == 0


def test_a_warm_shutdown_cuts_a_fetch_that_would_hang_and_hands_its_batch_back(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # sku-0's server never finishes sending (the hook hangs for 600 s unless the worker stops): Celery's warm
    # shutdown waits for the task, so only a fetch cut by the stop event lets the worker exit in time.
    worker = start_worker(*LEASE, hooks=True)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 4, prefix=lambda i: "hang-" if i == 0 else "")
    assert wait_for(lambda: a_full_batch(engine), 60, "a batch of 4 in progress", worker)

    worker.signal(signal.SIGTERM)
    worker.process.wait(60)

    assert worker.process.returncode == 0
    assert states(engine) == {"pending": 4}
    assert set(rows(engine, UNFINISHED)) == {(0, 0, None, None)}
    assert "released to the queue" in worker.output()


def test_a_cold_shutdown_leaves_the_batch_to_be_re_driven(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker(*LEASE, hooks=True)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 8, prefix=slow)
    batch = wait_for(lambda: a_full_batch(engine), 60, "a batch of 4 in progress", worker)

    worker.signal(signal.SIGQUIT)
    try:
        worker.process.wait(10)
    except subprocess.TimeoutExpired:
        pass  # Celery's cold shutdown of a prefork pool can hang; what matters is what it leaves behind
    worker.kill()
    assert running(engine) == batch  # not finished, not released: the lease is all that is left

    successor = start_worker(*LEASE, hooks=True)
    wait_for(lambda: states(engine) == {"done": 8}, 90, "8 jobs done", successor)
    assert embeddings_per_product(engine) == [1] * 8
    assert rows(engine, "SELECT completions, count(*) FROM ynet.embedding_jobs GROUP BY 1") == [(1, 8)]
    attempts = attempts_by_sku(engine)
    assert {sku for sku, n in attempts.items() if n == 2} == batch
    assert {n for sku, n in attempts.items() if sku not in batch} == {1}


def job_states(engine: Engine) -> dict[str, str]:
    return {
        str(sku): str(state)
        for sku, state in rows(
            engine,
            "SELECT p.external_id, j.state FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id",
        )
    }
