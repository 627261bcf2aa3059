"""Helpers for starting real `ynet-db worker` processes (Celery prefork + dispatcher)
against a real broker and database.

Every process is started in its own session and its whole process group is killed at teardown, so
no Celery child or dispatcher outlives its test. Leases and ticks are short so recovery takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from ynet_db.config import Settings

REDIS_URL = "redis://127.0.0.1:6379/15"


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the whole group: the Celery parent, its pool children and the dispatcher."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*options: str, broker: str | None = None) -> WorkerProcess:
        env = {
            **os.environ,
            "YNET_DATABASE_URL": str(settings.database_url),
            "YNET_DATA_DIR": str(settings.data_dir),
            "YNET_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
        }
        env.pop("YNET_BROKER_URL", None)
        if broker:
            env["YNET_BROKER_URL"] = broker
        log = tmp_path / f"worker-{len(started)}.log"
        argv = [
            sys.executable,
            "-m",
            "ynet_db",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--batch-size",
            "4",
            "--lease",
            "3",
            "--tick",
            "0.5",
            *options,
        ]
        with log.open("wb") as sink:
            process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(WorkerProcess(process, log))
        return started[-1]

    yield start
    for worker in started:
        worker.kill()


def wait_for(condition: Callable[[], object], timeout: float, what: str, worker: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if worker is not None and worker.process.poll() is not None:
            pytest.fail(
                f"the worker exited ({worker.process.returncode}) waiting for {what}:\n{worker.output()[-4000:]}"
            )
        time.sleep(0.1)
    log = worker.output()[-4000:] if worker else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{log}")


def scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()
