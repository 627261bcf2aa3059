"""`ynet-db dispatcher` alone (compose runs it as its own service): it sweeps and dispatches, answers its health
endpoint, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from brokers import free_port
from sqlalchemy import Engine, text
from worker_processes import WorkerProcess, scalar, wait_for

from ynet_db.config import Settings

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from catalogue_vectors import add_model, add_products, set_state  # noqa: E402


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200 and json.loads(response.read())["healthy"] is True
    except OSError:
        return False


def test_the_dispatcher_sweeps_a_dead_workers_job_and_stops_on_sigterm(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    model_id = add_model(engine, "m@1", 8)
    set_state(engine, model_id, "active")
    add_products(engine, 1)  # its job is recorded by the trigger
    with engine.begin() as conn:  # as a worker that died holding it would leave it
        conn.execute(
            text(
                "UPDATE ynet.embedding_jobs SET state = 'running', claimed_by = 'gone/1', attempts = 1, "
                "lease_expires_at = now() - interval '1 second'"
            )
        )
    port = free_port()
    env = {**os.environ, "YNET_DATABASE_URL": str(settings.database_url), "YNET_DATA_DIR": str(settings.data_dir)}
    env.pop("YNET_BROKER_URL", None)  # the database carries the messages
    log = tmp_path / "dispatcher.log"
    argv = [sys.executable, "-m", "ynet_db", "dispatcher", "--tick", "0.5", "--health-port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    dispatcher = WorkerProcess(process, log)
    try:
        wait_for(lambda: healthy(port), 60, "the dispatcher's health endpoint", dispatcher)
        wait_for(lambda: scalar(engine, "SELECT state = 'retry' FROM ynet.embedding_jobs"), 30, "the sweep", dispatcher)
        assert "lease expired on gone/1" in str(scalar(engine, "SELECT last_error FROM ynet.embedding_jobs"))
        dispatcher.signal(signal.SIGTERM)
        assert process.wait(30) == 0, dispatcher.output()
        assert dispatcher.output().splitlines()[-1] == "dispatcher stopped"
    finally:
        dispatcher.kill()
