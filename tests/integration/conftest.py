"""Catalogues shared by the search tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from catalogue_vectors import catalogue, unit_vectors
from databases import create_database, drop_database
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from ynet_db.db.engine import make_engine

TAGGED_DIM = 32

TAGGED_TEMPLATE = "ynet_test_search_tagged"


@pytest.fixture(scope="session")
def tagged_template(server_url: URL, template_database: str) -> Iterator[np.ndarray]:
    """3,000 products; 'rare' on every 200th (0.5%: 15 products), 'common' on all others.

    Built once per session as a template database (building the HNSW index takes seconds), copied per test.
    """
    vectors = unit_vectors(3000, TAGGED_DIM, seed=2)
    drop_database(server_url, TAGGED_TEMPLATE)
    builder = make_engine(create_database(server_url, template_database, name=TAGGED_TEMPLATE))
    catalogue(builder, "small@1", vectors, tags=lambda i: ["rare"] if i % 200 == 0 else ["common"])
    builder.dispose()
    yield vectors
    drop_database(server_url, TAGGED_TEMPLATE)


@pytest.fixture
def tagged_url(tagged_template: np.ndarray, database_factory: Callable[..., URL]) -> URL:
    return database_factory(TAGGED_TEMPLATE)


@pytest.fixture
def tagged_engine(tagged_url: URL) -> Iterator[Engine]:
    engine = make_engine(tagged_url)
    yield engine
    engine.dispose()


@pytest.fixture
def tagged(tagged_engine: Engine, tagged_template: np.ndarray) -> np.ndarray:
    return tagged_template
