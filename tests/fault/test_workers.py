"""Real workers, real brokers: every job ends with exactly one embedding, whatever happens to a worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, text
from worker_processes import REDIS_URL, WorkerProcess, scalar, wait_for

from ynet_db.model_registry import activate

DEFAULT_MODEL = "ynet-lite0-default"


def serve_default_model(engine: Engine, worker: WorkerProcess) -> None:
    """Wait for the worker's process to register its model, then make it the active one."""
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM ynet.models"), 90, "the worker's model", worker)
    activate(engine, DEFAULT_MODEL)


def insert_products(engine: Engine, directory: Path, count: int, broken: tuple[int, ...] = ()) -> None:
    rows = []
    for i in range(count):
        path = directory / f"{i}.png"
        if i not in broken:
            Image.new("RGB", (64, 64), (i * 7 % 256, 100, 200)).save(path)
        rows.append({"sku": f"sku-{i}", "uri": str(path)})
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, category, tags, image_uri) "
                "VALUES (:sku, 'dress', ARRAY['color:red'], :uri)"
            ),
            rows,
        )


def states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {s: n for s, n in conn.execute(text("SELECT state, count(*) FROM ynet.embedding_jobs GROUP BY state"))}


def embeddings_per_product(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT count(e.product_id) FROM ynet.products p "
                    "LEFT JOIN ynet.embeddings e ON e.product_id = p.id "
                    "GROUP BY p.id ORDER BY p.id"
                )
            ).scalars()
        )


@pytest.mark.parametrize("broker", [None, REDIS_URL], ids=["database-broker", "redis-broker"])
def test_inserted_products_are_embedded_once_each(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path, broker: str | None
) -> None:
    worker = start_worker(broker=broker)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 10)
    wait_for(lambda: states(engine) == {"done": 10}, 90, "10 jobs done", worker)
    assert embeddings_per_product(engine) == [1] * 10
    assert scalar(engine, "SELECT min(vector_dims(embedding)) FROM ynet.embeddings") == 1280


def test_a_poison_item_ends_dead_and_the_rest_of_its_batch_is_embedded(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker()
    serve_default_model(engine, worker)
    with engine.begin() as conn:  # three attempts keep the backoff (1-2 s, then 2-4 s) short
        conn.execute(text("ALTER TABLE ynet.embedding_jobs ALTER COLUMN max_attempts SET DEFAULT 3"))
    insert_products(engine, tmp_path, 6, broken=(2,))  # product 2's image file never appears
    wait_for(lambda: states(engine) == {"done": 5, "dead": 1}, 90, "5 done and 1 dead", worker)
    with engine.connect() as conn:
        attempts, error = conn.execute(
            text("SELECT attempts, last_error FROM ynet.embedding_jobs WHERE state = 'dead'")
        ).one()
    assert attempts == 3 and "does not exist" in error
    assert embeddings_per_product(engine) == [1, 1, 0, 1, 1, 1]


def test_a_worker_process_killed_mid_batch_loses_and_duplicates_nothing(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker()
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 24)

    held = "SELECT claimed_by FROM ynet.embedding_jobs WHERE state = 'running' LIMIT 1"
    wait_for(lambda: scalar(engine, held), 60, "a batch in progress", worker)
    victim = int(str(scalar(engine, held)).rsplit("/", 1)[1])
    assert victim != worker.process.pid  # a pool child holds the lease, not the Celery parent
    os.kill(victim, signal.SIGKILL)

    wait_for(lambda: states(engine).get("done") == 24, 120, "24 jobs done", worker)
    assert states(engine) == {"done": 24}
    assert embeddings_per_product(engine) == [1] * 24
    # The killed child's batch came back through the lease sweep and was claimed a second time.
    assert int(str(scalar(engine, "SELECT count(*) FROM ynet.embedding_jobs WHERE attempts = 2"))) >= 1
