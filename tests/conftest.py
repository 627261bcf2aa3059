"""Fixtures shared by every suite: a real PostgreSQL with pgvector, a fresh database per test, and brokers.

The server is the embedded one (started once per test session in a temporary directory) or the one
in YNET_TEST_DATABASE_URL. A template database is migrated once; each test gets its own copy of it,
which PostgreSQL makes in a few milliseconds. Brokers: see brokers.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from brokers import RedisServer, configured_rabbitmq_url, free_port, why_rabbitmq_is_unusable
from databases import create_database, drop_database
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from ynet_db.config import Settings
from ynet_db.db import migrate
from ynet_db.db.engine import make_engine
from ynet_db.db.server import start_embedded, stop_embedded

TEMPLATE = "ynet_test_template"


@pytest.fixture(autouse=True)
def pytorch_gets_its_threads_back() -> Iterator[None]:
    """A model put on ONNX Runtime leaves PyTorch one thread in its process (`nn/runtime_threads.py`); in this
    shared test process, the next test (training, say) gets the process's threads back."""
    yield
    threads = sys.modules.get("ynet_db.nn.runtime_threads")
    if threads is not None:
        threads.set_inference_threads(threads.inference_threads())


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """An administrative URL of the test server; tests create their databases through it."""
    external = Settings.from_env().test_database_url
    if external:
        yield make_url(external).set(drivername="postgresql+psycopg")
        return
    # Not under pytest's temporary root: pytest resets that to mode 0700 whenever another session
    # starts, and the embedded server runs as its own system user when we are root.
    data_dir = Path(tempfile.mkdtemp(prefix="ynet-test-"))
    yield start_embedded(data_dir).url("postgres")
    stop_embedded(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(server_url: URL) -> Iterator[str]:
    drop_database(server_url, TEMPLATE)
    engine = make_engine(create_database(server_url, name=TEMPLATE))
    migrate.upgrade(engine)
    engine.dispose()  # a template must have no open connections when it is copied
    yield TEMPLATE
    drop_database(server_url, TEMPLATE)


@pytest.fixture
def database_factory(server_url: URL) -> Iterator[Callable[..., URL]]:
    """Make databases for this test (empty, or copies of a template); all dropped afterwards."""
    made: list[URL] = []

    def make(template: str | None = None) -> URL:
        made.append(create_database(server_url, template))
        return made[-1]

    yield make
    for url in made:
        drop_database(server_url, str(url.database))


@pytest.fixture
def database_url(database_factory: Callable[..., URL], template_database: str) -> URL:
    """A fresh database migrated to the newest schema."""
    return database_factory(template_database)


@pytest.fixture
def engine(database_url: URL) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def empty_engine(database_factory: Callable[..., URL]) -> Iterator[Engine]:
    """A fresh database with no ynet schema at all, for migration tests."""
    engine = make_engine(database_factory())
    yield engine
    engine.dispose()


@pytest.fixture
def settings(database_url: URL, tmp_path: Path) -> Settings:
    """Settings that point ynet-db at this test's database and a private data directory."""
    return Settings(database_url=database_url.render_as_string(hide_password=False), data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this test session's own (see brokers.py)."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis") / "redis.log")
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The RabbitMQ in YNET_TEST_RABBITMQ_URL (default 127.0.0.1:5672); tests that need it skip if none answers."""
    url = configured_rabbitmq_url()
    problem = why_rabbitmq_is_unusable(url)
    if problem:
        pytest.skip(problem)
    return url
