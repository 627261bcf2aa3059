"""Helpers for starting real `ynet-db worker` processes (Celery prefork + dispatcher) and a private Redis
against a real database, and for reading the outcome.

Every process is started in its own session and its whole process group is killed at teardown, so
no Celery child, dispatcher or Redis outlives its test. Leases and ticks are short so recovery takes
seconds. The session's Redis (tests/brokers.py) is never stopped: outage tests start their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from brokers import RedisServer, free_port
from PIL import Image
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url

from ynet_db.config import Settings
from ynet_db.db import migrate
from ynet_db.db.engine import make_engine
from ynet_db.models.registry import activate

HOOKS = Path(__file__).parent / "hooks"
DEFAULT_MODEL = "ynet-lite0-default"


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the whole group: the Celery parent, its pool children and the dispatcher."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(10)

    def signal(self, number: int) -> None:
        """Signal the Celery parent only, as `kill PID` or a process supervisor would."""
        os.kill(self.process.pid, number)

    def output(self, since: int = 0) -> str:
        """The log so far, from byte `since` on (a `log_size()` taken earlier)."""
        with self.log.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size


BROKER_FIXTURES = {"redis": "redis_url", "rabbitmq": "rabbitmq_url"}
"""Brokers a test names rather than addresses: the session's Redis, and RabbitMQ (skipped if none answers)."""


@pytest.fixture
def start_worker(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., WorkerProcess]]:
    """start(*options, broker=None | "redis" | "rabbitmq" | URL, hooks=False, database=None, prefix=(),
    runtime="torch"): a worker on this test's database (or `database`), with the database as broker unless
    one is named, run behind `prefix` (a simulated host's, tests/fault/netns.py) when one is given."""
    started: list[WorkerProcess] = []

    def start(
        *options: str,
        broker: str | None = None,
        hooks: bool = False,
        database: URL | None = None,
        prefix: Sequence[str] = (),
        runtime: str = "torch",
    ) -> WorkerProcess:
        if broker in BROKER_FIXTURES:
            broker = str(request.getfixturevalue(BROKER_FIXTURES[broker]))
        url = database.render_as_string(hide_password=False) if database else str(settings.database_url)
        env = {
            **os.environ,
            "YNET_DATABASE_URL": url,
            "YNET_DATA_DIR": str(settings.data_dir),
            "YNET_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
            # Most tests are about the queue: exporting ONNX graphs into each test's fresh data directory
            # would add seconds per worker; the runtime has its own tests (tests/unit/nn/test_runtime.py).
            "YNET_RUNTIME": runtime,
            "YNET_IMAGE_ROOTS": str(tmp_path),  # the products' images (`insert_products`)
        }
        env.pop("YNET_BROKER_URL", None)
        if broker:
            env["YNET_BROKER_URL"] = broker
        if hooks:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOKS), env.get("PYTHONPATH")]))
        log = tmp_path / f"worker-{len(started)}.log"
        argv = [
            *prefix,
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


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis.log")
    server.start()
    yield server
    server.stop()


@dataclass
class PostgresServer:
    """A private embedded PostgreSQL with one migrated database, stopped and started again the way an
    operator would (`ynet-db db stop` and `start`), so the server is never a child of the test process."""

    data_dir: Path

    def db(self, command: str) -> str:
        env = {**os.environ, "YNET_DATA_DIR": str(self.data_dir)}
        env.pop("YNET_DATABASE_URL", None)
        argv = [sys.executable, "-m", "ynet_db", "db", command]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"ynet-db db {command} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def start(self) -> URL:
        # The socket lives in the data directory, so the restarted server has the same URL.
        return make_url(self.db("start").splitlines()[-1]).set(drivername="postgresql+psycopg")

    def stop(self) -> None:
        assert self.db("stop").strip() == "embedded PostgreSQL stopped"


@pytest.fixture
def private_postgres() -> Iterator[tuple[PostgresServer, URL, Engine]]:
    """The server, its database's URL and an engine on it (which reconnects after a restart)."""
    # Not under pytest's temporary root, for the reason given in tests/conftest.py's server_url.
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="ynet-private-")))
    url = server.start()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        yield server, url, engine
    finally:
        engine.dispose()
        server.db("stop")  # a test that failed may have left it stopped
        shutil.rmtree(server.data_dir, ignore_errors=True)


def wait_for(condition: Callable[[], object], timeout: float, what: str, worker: WorkerProcess | None = None) -> object:
    """Poll until `condition` returns something true, and return that (not a second, later reading)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if worker is not None and worker.process.poll() is not None:
            pytest.fail(
                f"the worker exited ({worker.process.returncode}) waiting for {what}:\n{worker.output()[-4000:]}"
            )
        time.sleep(0.1)
    log = worker.output()[-4000:] if worker else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{log}")


def scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(engine: Engine, sql: str, **params: object) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), params)]


def serve_default_model(engine: Engine, worker: WorkerProcess) -> None:
    """Wait for the worker's process to register its model, then make it the active one."""
    wait_for(lambda: scalar(engine, "SELECT count(*) FROM ynet.models"), 90, "the worker's model", worker)
    activate(engine, DEFAULT_MODEL)


def set_max_attempts(engine: Engine, attempts: int) -> None:
    """Fewer attempts keep a poison test short (backoff 1-2 s, then 2-4 s)."""
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE ynet.embedding_jobs ALTER COLUMN max_attempts SET DEFAULT {int(attempts)}"))


def insert_products(
    engine: Engine,
    directory: Path,
    count: int,
    *,
    start: int = 0,
    broken: Sequence[int] = (),
    prefix: Callable[[int], str] = lambda i: "",
) -> None:
    """Products sku-START.. with small distinct images; `broken` ones have no file, `prefix` names faults."""
    values = []
    for i in range(start, start + count):
        path = directory / f"{prefix(i)}{i}.png"
        if i not in broken:
            Image.new("RGB", (32, 32), (i * 7 % 256, i * 13 % 256, 200)).save(path)
        values.append({"sku": f"sku-{i}", "uri": str(path)})
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, category, tags, image_uri) "
                "VALUES (:sku, 'dress', ARRAY['color:red'], :uri)"
            ),
            values,
        )


def states(engine: Engine) -> dict[str, int]:
    return {
        str(s): int(str(n)) for s, n in rows(engine, "SELECT state, count(*) FROM ynet.embedding_jobs GROUP BY state")
    }


def embeddings_per_product(engine: Engine) -> list[int]:
    return [
        int(str(n))
        for (n,) in rows(
            engine,
            "SELECT count(e.product_id) FROM ynet.products p "
            "LEFT JOIN ynet.embeddings e ON e.product_id = p.id GROUP BY p.id ORDER BY p.id",
        )
    ]


def attempts_by_sku(engine: Engine) -> dict[str, int]:
    return {
        str(sku): int(str(n))
        for sku, n in rows(
            engine,
            "SELECT p.external_id, j.attempts FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id",
        )
    }
