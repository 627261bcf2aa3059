"""A served catalogue: one database (copied from the migrated template) with an active default model and
60 products with generated vectors, and one `ynet-db serve` process on it for the whole session.

Tests that change the catalogue or the registry put back what they changed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from databases import create_database, drop_database
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from ynet_db.db.engine import make_engine

sys.path[:0] = [str(Path(__file__).parents[1] / "integration"), str(Path(__file__).parents[1] / "security")]
from catalogue_vectors import catalogue, unit_vectors  # noqa: E402
from serve_process import ServeProcess, start_serve  # noqa: E402

if TYPE_CHECKING:
    from ynet_db.nn.model import RetrievalModel

PRODUCTS = 60


@pytest.fixture(scope="session")
def default_model() -> RetrievalModel:
    """The model the served process loads (the default, eager torch): what the Python API is compared with."""
    from ynet_db.nn.model import RetrievalModel

    return RetrievalModel.load_default(device="cpu")


@pytest.fixture(scope="session")
def served_url(server_url: URL, template_database: str, default_model: RetrievalModel) -> Iterator[URL]:
    url = create_database(server_url, template_database)
    engine = make_engine(url)
    catalogue(engine, default_model.version, unit_vectors(PRODUCTS, default_model.embedding_dim, seed=3))
    engine.dispose()
    yield url
    drop_database(server_url, str(url.database))


@pytest.fixture(scope="session")
def served_engine(served_url: URL) -> Iterator[Engine]:
    engine = make_engine(served_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def served(served_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`ynet-db serve` (in-process model) that may fetch query URLs from loopback (YNET_ALLOWED_HOSTS)."""
    folder = tmp_path_factory.mktemp("serve")
    env = {
        "YNET_DATABASE_URL": served_url.render_as_string(hide_password=False),
        "YNET_DATA_DIR": str(folder / "data"),
        "YNET_ALLOWED_HOSTS": "127.0.0.1",
        "YNET_MAX_UPLOAD_BYTES": str(256 * 1024),
        "YNET_MAX_CONCURRENT_SEARCHES": "1",
        "YNET_SEARCH_WAIT_S": "0",
    }
    process = start_serve(env, folder / "serve.log")
    yield process
    process.stop()
