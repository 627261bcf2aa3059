"""A real `ynet-db worker --metrics-port` (Celery prefork, its dispatcher spawned beside it): after it
embedded something, its port reports the work of every process, and the database's gauges."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from brokers import free_port
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).parents[1] / "fault"))
from worker_processes import (  # noqa: E402
    WorkerProcess,
    insert_products,
    serve_default_model,
    set_max_attempts,
    start_worker,
    states,
    wait_for,
)

__all__ = ["start_worker"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_a_worker_reports_what_its_processes_did(
    engine: Engine, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port))
    serve_default_model(engine, worker)
    before = wait_for(lambda: scrape(port), 60, "the metrics port", worker)
    assert isinstance(before, dict)
    assert value(before, "ynet_embeddings_written_total") == 0
    assert value(before, "ynet_database_up") == 1 and value(before, "ynet_products") == 0
    set_max_attempts(engine, 1)
    insert_products(engine, tmp_path, 6, broken=(5,))  # product 5's image file never appears: a failed fetch
    wait_for(lambda: states(engine) == {"done": 5, "dead": 1}, 90, "5 done and 1 dead", worker)
    after = wait_for(
        lambda: (s := scrape(port)) and value(s, "ynet_embeddings_written_total") == 5 and s, 30, "5 written", worker
    )
    assert isinstance(after, dict)
    # The pool child's work, added up by the parent.
    assert value(after, "ynet_embed_stage_seconds_count", stage="fetch") == 6
    assert value(after, "ynet_embed_stage_seconds_count", stage="decode") == 5
    assert value(after, "ynet_embed_stage_seconds_count", stage="encode") >= 1
    assert value(after, "ynet_embed_stage_seconds_count", stage="write") >= 1
    assert value(after, "ynet_embed_stage_seconds_sum", stage="encode") > 0
    assert value(after, "ynet_embed_failures_total", stage="fetch") == 1
    # The dispatcher's (a spawned process of its own).
    assert value(after, "ynet_dispatch_tasks_sent_total") >= 1
    # Read from the database at scrape time.
    assert value(after, "ynet_jobs", state="done") == 5 and value(after, "ynet_jobs", state="dead") == 1
    assert value(after, "ynet_jobs", state="pending") == 0
    assert value(after, "ynet_products") == 6
    assert value(after, "ynet_live_workers") >= 1
    assert value(after, "ynet_active_model_info", name="ynet-lite0-default", version=_active_version(engine)) == 1


def _active_version(engine: Engine) -> str:
    from sqlalchemy import text

    with engine.connect() as conn:
        return str(conn.execute(text("SELECT version FROM ynet.models WHERE state = 'active'")).scalar_one())
