"""Real workers, real brokers: every job ends with exactly one embedding, whatever happens to a worker."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, text
from worker_processes import (
    WorkerProcess,
    attempts_by_sku,
    embeddings_per_product,
    insert_products,
    rows,
    scalar,
    serve_default_model,
    set_max_attempts,
    states,
    wait_for,
)
from ynet_db.workers.app import EMBED_TASK, make_app

from ynet_db.config import Settings

# Completions are counted only by the statement that writes an embedding and marks its job done, so a job
# finished twice shows 2 here (counting embeddings cannot: one row per product and model, upserted).
ONCE = "SELECT completions, attempts, count(*) FROM ynet.embedding_jobs GROUP BY 1, 2 ORDER BY 1, 2"


@pytest.mark.parametrize(
    "broker", [None, "redis", "rabbitmq"], ids=["database-broker", "redis-broker", "rabbitmq-broker"]
)
def test_inserted_products_are_embedded_once_each(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path, broker: str | None
) -> None:
    worker = start_worker(broker=broker)
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 10)
    wait_for(lambda: states(engine) == {"done": 10}, 90, "10 jobs done", worker)
    assert embeddings_per_product(engine) == [1] * 10
    assert rows(engine, ONCE) == [(1, 1, 10)], "every job claimed once and completed once"
    assert scalar(engine, "SELECT min(vector_dims(embedding)) FROM ynet.embeddings") == 1280


def test_a_poison_item_ends_dead_and_the_rest_of_its_batch_is_embedded(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker()
    serve_default_model(engine, worker)
    set_max_attempts(engine, 3)
    insert_products(engine, tmp_path, 6, broken=(2,))  # product 2's image file never appears
    wait_for(lambda: states(engine) == {"done": 5, "dead": 1}, 90, "5 done and 1 dead", worker)
    ((attempts, error),) = rows(engine, "SELECT attempts, last_error FROM ynet.embedding_jobs WHERE state = 'dead'")
    assert attempts == 3 and "does not exist" in str(error)
    assert embeddings_per_product(engine) == [1, 1, 0, 1, 1, 1]


def test_an_image_url_the_http_client_cannot_parse_costs_only_its_own_job(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # urlsplit raises ValueError for this URL: once it ended the task, and the heartbeat kept its
    # batch-mates' leases alive, so they stayed 'running' for as long as the process lived.
    worker = start_worker()
    serve_default_model(engine, worker)
    set_max_attempts(engine, 2)
    images = []
    for i in (1, 2, 3):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
        images.append({"sku": f"sku-{i}", "uri": str(tmp_path / f"{i}.png")})
    with engine.begin() as conn:  # one transaction: the bad URL's job is claimed first, its batch-mates with it
        conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, category, tags, image_uri) "
                "VALUES (:sku, 'dress', ARRAY['color:red'], :uri)"
            ),
            [{"sku": "sku-0", "uri": "http://[::1/x.jpg"}, *images],
        )
    wait_for(lambda: states(engine) == {"done": 3, "dead": 1}, 90, "3 done and 1 dead", worker)
    ((sku, error),) = rows(
        engine,
        "SELECT p.external_id, j.last_error FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
        "WHERE j.state = 'dead'",
    )
    assert sku == "sku-0" and "http://[::1/x.jpg" in str(error)
    once = "SELECT completions, attempts, count(*) FROM ynet.embedding_jobs GROUP BY 1, 2 ORDER BY 1"
    assert rows(engine, once) == [(0, 2, 1), (1, 1, 3)]


def test_an_item_that_kills_its_process_ends_dead_without_taking_its_batch_with_it(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker(hooks=True)
    serve_default_model(engine, worker)
    set_max_attempts(engine, 3)
    # Product 2's image kills the pool child on every fetch, while its batch-mates 0, 1 and 3 are held.
    insert_products(engine, tmp_path, 8, prefix=lambda i: "kill-" if i == 2 else "")
    wait_for(lambda: states(engine) == {"done": 7, "dead": 1}, 150, "7 done and 1 dead", worker)

    ((sku, error),) = rows(
        engine,
        "SELECT p.external_id, j.last_error FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
        "WHERE j.state = 'dead'",
    )
    assert sku == "sku-2" and "lease expired" in str(error)
    attempts = attempts_by_sku(engine)
    assert attempts.pop("sku-2") == 3
    # Retried jobs run alone, so the first kill cost each batch-mate one attempt and later kills none.
    assert max(attempts.values()) <= 2
    assert embeddings_per_product(engine) == [1, 1, 0, 1, 1, 1, 1, 1]
    assert worker.process.poll() is None  # the Celery parent replaced its child each time


def test_the_same_wake_up_delivered_twice_embeds_each_product_once(
    engine: Engine, settings: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # No dispatcher: the only messages are the two identical ones this test sends, run side by side.
    worker = start_worker("--no-dispatcher", "--concurrency", "2")
    serve_default_model(engine, worker)
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM ynet.workers") == 2, 90, "two pool children", worker)
    insert_products(engine, tmp_path, 12)
    model_id = scalar(engine, "SELECT id FROM ynet.models")
    sender = make_app(settings)
    for _ in range(2):
        sender.send_task(EMBED_TASK, kwargs={"model_id": model_id})
    wait_for(lambda: states(engine) == {"done": 12}, 90, "12 jobs done", worker)
    assert embeddings_per_product(engine) == [1] * 12
    assert set(attempts_by_sku(engine).values()) == {1}
    assert rows(engine, ONCE) == [(1, 1, 12)], "both deliveries ran, and no job was completed twice"
    assert "Traceback" not in worker.output() and " ERROR" not in worker.output()


@pytest.mark.slow  # about 2.5 minutes on two shared cores: four models load and share them
def test_four_workers_split_200_jobs_and_none_is_done_twice(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # A lease must outlast a batch: four processes on two cores take longer than the usual 3 s per batch,
    # and an expired lease hands a running batch to a second worker (which is then done twice).
    workers = [start_worker("--lease", "60")] + [start_worker("--lease", "60", "--no-dispatcher") for _ in range(3)]
    serve_default_model(engine, workers[0])
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM ynet.workers") == 4, 120, "four workers beating", workers[0])
    insert_products(engine, tmp_path, 200)
    wait_for(lambda: states(engine) == {"done": 200}, 240, "200 jobs done", workers[0])

    assert embeddings_per_product(engine) == [1] * 200
    # A job done twice would have been claimed twice: every attempt count would not be 1.
    assert set(attempts_by_sku(engine).values()) == {1}
    assert rows(engine, ONCE) == [(1, 1, 200)]
    by_worker = dict(rows(engine, "SELECT claimed_by, count(*) FROM ynet.embedding_jobs GROUP BY claimed_by"))
    assert len(by_worker) == 4, by_worker
    # Each process counts only the jobs it finished; the counts add up to the jobs, with no overlap.
    wait_for(
        lambda: scalar(engine, "SELECT sum(jobs_done) FROM ynet.workers") == 200, 15, "the heartbeats' final counts"
    )
    assert dict(rows(engine, "SELECT id, jobs_done FROM ynet.workers")) == by_worker


def test_engine_connections_and_model_are_made_in_the_pool_children(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker("--concurrency", "2")
    serve_default_model(engine, worker)
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM ynet.workers") == 2, 90, "two pool children", worker)
    insert_products(engine, tmp_path, 8)
    wait_for(lambda: states(engine) == {"done": 8}, 90, "8 jobs done", worker)

    children = {int(str(pid)) for (pid,) in rows(engine, "SELECT pid FROM ynet.workers")}
    for worker_id, pid in rows(engine, "SELECT id, pid FROM ynet.workers"):
        # `pid` is the process that built the engine and model; the id names the process that beats.
        assert str(worker_id).endswith(f"/{pid}")
        assert parent_of(int(str(pid))) == worker.pid
    # Each connection is named by the process that opened it: only the children, never the parent.
    opened_by = {
        int(str(name).split()[1])
        for (name,) in rows(
            engine,
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'ynet-worker %'",
        )
    }
    assert opened_by and opened_by <= children
    assert worker.pid not in opened_by

    worker.signal(signal.SIGTERM)
    worker.process.wait(30)
    assert worker.process.returncode == 0
    assert scalar(engine, "SELECT count(*) FROM ynet.workers WHERE stopped_at IS NULL") == 0
    assert scalar(engine, "SELECT sum(jobs_done) FROM ynet.workers") == 8


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ')'.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


RUNNING = (
    "SELECT p.external_id, j.claimed_by FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
    "WHERE j.state = 'running'"
)


def one_full_batch(engine: Engine) -> tuple[set[str], str] | None:
    """The skus of the one batch in progress and its holder, once all 4 are claimed and no other job is
    running (no earlier batch's write in flight): read once, so the kill hits exactly these jobs."""
    running = rows(engine, RUNNING)
    holders = {str(holder) for _, holder in running}
    return ({str(sku) for sku, _ in running}, holders.pop()) if len(running) == 4 and len(holders) == 1 else None


def test_a_worker_process_killed_mid_batch_loses_and_duplicates_nothing(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = start_worker(hooks=True)
    serve_default_model(engine, worker)
    # Slow fetches (0.5 s each) hold every batch for about 2 s, so the kill lands while one is running.
    insert_products(engine, tmp_path, 24, prefix=lambda i: "slow-")

    killed = wait_for(lambda: one_full_batch(engine), 60, "a batch of 4 in progress", worker)
    assert isinstance(killed, tuple)
    batch, holder = killed
    victim = int(holder.rsplit("/", 1)[1])
    assert victim != worker.pid  # a pool child holds the lease, not the Celery parent
    os.kill(victim, signal.SIGKILL)

    wait_for(lambda: states(engine).get("done") == 24, 120, "24 jobs done", worker)
    assert states(engine) == {"done": 24}
    assert embeddings_per_product(engine) == [1] * 24
    assert rows(engine, "SELECT completions, count(*) FROM ynet.embedding_jobs GROUP BY 1") == [(1, 24)]
    # Exactly the killed batch came back through the lease sweep and was claimed a second time; every
    # other job was claimed once (a live batch swept from under its worker would show 2 here).
    attempts = attempts_by_sku(engine)
    assert {sku for sku, n in attempts.items() if n == 2} == batch
    assert {n for sku, n in attempts.items() if sku not in batch} == {1}


def test_running_workers_back_fill_a_newly_activated_model_and_switch_to_it(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from ynet_db.models.registry import ModelIdentity, activate, register
    from ynet_db.nn.model import RetrievalModel
    from ynet_db.presentation.demo import demo_checkpoint

    worker = start_worker()
    serve_default_model(engine, worker)
    insert_products(engine, tmp_path, 6)
    wait_for(lambda: states(engine) == {"done": 6}, 90, "6 jobs done", worker)

    demo = RetrievalModel.load(demo_checkpoint())
    register(engine, ModelIdentity.of(demo, demo_checkpoint()))
    assert activate(engine, demo.version) is not None
    active = "SELECT version FROM ynet.models WHERE state = 'active'"
    wait_for(lambda: scalar(engine, active) == demo.version, 120, "the demo model active", worker)
    dims = rows(engine, "SELECT vector_dims(embedding), count(*) FROM ynet.embeddings GROUP BY 1 ORDER BY 1")
    assert dims == [(256, 6), (1280, 6)], "every product under both models, the old vectors kept"
    assert worker.process.poll() is None, "the same worker, not restarted"


def test_a_worker_whose_checkpoint_is_corrupt_exits_non_zero_before_it_says_ready(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    monkeypatch.setenv("YNET_MODEL", str(corrupt))
    worker = start_worker()
    assert worker.process.wait(120) == 1
    (error,) = error_lines(worker)
    assert error.startswith(f"Error: cannot serve YNET_MODEL: checkpoint {corrupt}: not a readable safetensors file")
    assert " ready" not in worker.output()
    assert scalar(engine, "SELECT count(*) FROM ynet.workers") == 0


def test_a_worker_process_that_cannot_build_its_model_stops_the_worker_with_the_reason(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A genuine checkpoint (it reads and verifies) made for other pretrained weights: only building the
    # network in the pool child finds that out.
    from ynet_db.nn.checkpoint import load_checkpoint, save_checkpoint
    from ynet_db.presentation.demo import demo_checkpoint

    demo = load_checkpoint(demo_checkpoint())
    foreign = replace(demo.info, config=demo.info.config.replace(weights_sha256="0" * 64))
    save_checkpoint(tmp_path / "foreign.safetensors", foreign, demo.tensors)
    monkeypatch.setenv("YNET_MODEL", str(tmp_path / "foreign.safetensors"))
    worker = start_worker()
    assert worker.process.wait(120) == 1
    (error,) = error_lines(worker)
    assert re.fullmatch(
        r"Error: worker process \d+ cannot serve: WeightsError: pretrained weights .* is not the expected 0+", error
    )
    assert scalar(engine, "SELECT count(*) FROM ynet.workers") == 0


def error_lines(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.output().splitlines() if line.startswith("Error:")]
