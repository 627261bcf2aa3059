"""Searches on read replicas (YNET_SEARCH_DATABASE_URLS, ynet_db/db/replicas.py).

The slow tests run a real primary and a real streaming replica (`pg_basebackup -R` from the embedded server's
binaries, replication.py): results come from the replica; a product added on the primary becomes searchable
there; a replica that goes away hands searches on with a warning and none fails; a replica whose replay is
paused (lag) neither fails a search nor pairs one model's query with another's vectors; the SQL search worker
and the HTTP service read their candidates there. Which server answered is seen in the answer itself: while
the replica's replay is paused, a product only the primary has is nearest to the query.

The default-run tests need no replication: a replica that refuses connections, and a database that plays a
replica whose view has another active model, on the suite's own server.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from brokers import free_port
from catalogue_vectors import add_embeddings, add_model, catalogue, exact_top, photo, unit_vectors
from databases import create_database, drop_database
from replication import Cluster
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from ynet_db.config import Settings
from ynet_db.db import migrate
from ynet_db.db.engine import make_engine
from ynet_db.db.replicas import SearchDatabases
from ynet_db.db.vectors import vector_text
from ynet_db.models import registry
from ynet_db.nn.model import RetrievalModel
from ynet_db.search.prefilter import ActiveModel
from ynet_db.search.query import ModelFor, SearchQuery, SearchResult, on_search_database, run_queries
from ynet_db.search.requests import RequestWorker, RequestWorkerOptions

sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
from serve_process import start_serve  # noqa: E402

PRODUCTS = 120
K = 150
"""More than the catalogue: every embedded product comes back, so a product only one server has shows."""
IMAGE = photo(11)
MARKER = "only-on-the-primary"
LOGGER = "ynet_db.db.replicas"


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return RetrievalModel.load_default()


@functools.cache  # one encoding per model object: the model is the costly part of these tests
def query_vector(model: RetrievalModel) -> np.ndarray:
    vector = model.encode_street(model.preprocess(IMAGE)[None]).vectors[0].numpy().astype(np.float64)
    return vector / np.linalg.norm(vector)


def ask(databases: Engine | SearchDatabases, model_for: ModelFor) -> SearchResult:
    """The photo, searched exactly and not re-ranked: the rows are the exact order by distance."""
    return run_queries(databases, model_for, [SearchQuery(IMAGE, k=K, candidates=K, rerank=False, exact=True)])[0]


def nearest_first(stored: np.ndarray, query: np.ndarray) -> list[str]:
    """The catalogue's names, nearest to `query` first (NumPy, exact cosine distance)."""
    return exact_top(stored, np.arange(len(stored)), query, K)


def names(result: SearchResult) -> list[str]:
    return [row.external_id for row in result.rows]


def add_product(engine: Engine, external_id: str, vector: np.ndarray, model_id: int) -> None:
    """A product with its embedding under one model, in one transaction."""
    with engine.begin() as conn:
        product = conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, title, category, image_uri) "
                "VALUES (:id, :id, 'dress', '/img/' || :id || '.jpg') RETURNING id"
            ),
            {"id": external_id},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO ynet.embeddings (product_id, model_id, image_sha256, embedding) "
                "VALUES (:p, :m, :sha, CAST(:v AS vector))"
            ),
            {"p": product, "m": model_id, "sha": "0" * 64, "v": vector_text(vector.astype(np.float32))},
        )


def the_only(model: RetrievalModel) -> ModelFor:
    """A caller that holds one model (the Python API's `model=`): `run_queries` checks it is the active one."""
    return lambda active: model


def replica_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# -- without replication: the fallback on the suite's server -------------------------------------------------


def test_a_replica_that_refuses_connections_hands_the_search_to_the_primary_with_a_warning(
    engine: Engine, model: RetrievalModel, caplog: pytest.LogCaptureFixture
) -> None:
    stored = unit_vectors(PRODUCTS, model.embedding_dim, seed=4)
    catalogue(engine, model.version, stored)
    port = free_port()  # nothing listens there
    settings = Settings(search_database_urls=(f"postgresql://reader:s3cret@127.0.0.1:{port}/ynet",))
    databases = SearchDatabases.from_settings(settings, engine, rest_s=600)  # longer than two searches take

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first = ask(databases, the_only(model))
        second = ask(databases, the_only(model))

    want = nearest_first(stored, query_vector(model))
    assert names(first) == names(second) == want
    (warning,) = replica_warnings(caplog)  # the second search left the resting replica alone
    name = f"postgresql+psycopg://reader:***@127.0.0.1:{port}/ynet"
    assert warning.startswith(f"search database replica {name} cannot answer (OperationalError:")
    assert warning.endswith("searching on the primary; it is tried again in 600 s")
    assert "s3cret" not in caplog.text


def test_a_replica_whose_view_has_another_model_answers_with_it_or_hands_a_fixed_model_on(
    engine: Engine,
    database_factory: Callable[..., URL],
    template_database: str,
    model: RetrievalModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A database in the replica's place whose active model is the old one (as a lagging replica's is)."""
    old, new = copy.copy(model), copy.copy(model)
    old.version, new.version = "old@1", "new@1"
    old_vectors = unit_vectors(PRODUCTS, model.embedding_dim, seed=5)
    new_vectors = unit_vectors(PRODUCTS, model.embedding_dim, seed=6)
    catalogue(engine, new.version, new_vectors)
    behind = make_engine(database_factory(template_database))
    catalogue(behind, old.version, old_vectors)
    databases = SearchDatabases(engine, [behind])
    loaded = {old.version: old, new.version: new}
    q = query_vector(model)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            following = ask(databases, lambda active: loaded[active.version])
            assert replica_warnings(caplog) == []
            fixed = ask(databases, the_only(new))
    finally:
        behind.dispose()

    # The view's own model with its own vectors; a caller holding the new model gets the primary's answer.
    assert (following.model_version, names(following)) == (old.version, nearest_first(old_vectors, q))
    assert {row.model_version for row in following.rows} == {old.version}
    assert (fixed.model_version, names(fixed)) == (new.version, nearest_first(new_vectors, q))
    (warning,) = replica_warnings(caplog)
    assert f"replica {behind.url.render_as_string(hide_password=True)} cannot answer (SearchError: " in warning
    assert f"the active model is {old.version}, but the query model is {new.version}" in warning


# -- a real primary and a real streaming replica (slow) --------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Not under pytest's temporary root (see tests/conftest.py: the embedded server's own user must reach it).
    folder = Path(tempfile.mkdtemp(prefix="ynet-replica-"))
    started = Cluster.start(folder, free_port())
    try:
        template = make_engine(create_database(started.primary_url("postgres"), name="ynet_replica_template"))
        migrate.upgrade(template)
        template.dispose()
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Pair:
    """One test's database on the primary, its copy on the replica, and a catalogue under model A."""

    cluster: Cluster
    primary: Engine
    replica_url: URL
    stored: np.ndarray
    model_a: int

    def replica(self, password: str | None = None) -> str:
        """The replica's URL, as YNET_SEARCH_DATABASE_URLS would give it."""
        return self.replica_url.set(password=password).render_as_string(hide_password=False)

    def databases(self, *urls: str) -> SearchDatabases:
        """Searches on `urls` (default: this test's replica), then the primary, as from the settings; a replica
        that failed rests longer than a test takes (on a loaded machine one search can take seconds)."""
        settings = Settings(search_database_urls=urls or (self.replica(),))
        return SearchDatabases.from_settings(settings, self.primary, rest_s=600)


@pytest.fixture
def pair(cluster: Cluster, model: RetrievalModel) -> Iterator[Pair]:
    url = create_database(cluster.primary_url("postgres"), template="ynet_replica_template")
    primary = make_engine(url)
    stored = unit_vectors(PRODUCTS, model.embedding_dim, seed=7)
    model_a = catalogue(primary, model.version, stored)
    cluster.wait_for_replay()
    try:
        yield Pair(cluster, primary, cluster.replica.url(str(url.database)), stored, model_a)
    finally:
        cluster.replica.resume_replay()  # a test that paused it may have failed before resuming
        primary.dispose()
        drop_database(cluster.primary_url("postgres"), str(url.database))


def lag_with_a_marker(pair: Pair, model: RetrievalModel) -> None:
    """Pause the replica's replay, then give the primary alone a product nearest to the query."""
    pair.cluster.replica.pause_replay()
    add_product(pair.primary, MARKER, query_vector(model), pair.model_a)


@pytest.mark.slow
def test_searches_read_from_the_replica(pair: Pair, model: RetrievalModel) -> None:
    lag_with_a_marker(pair, model)
    databases = pair.databases()

    on_replica = ask(databases, the_only(model))
    on_primary = ask(pair.primary, the_only(model))

    assert on_search_database(databases, lambda conn: conn.execute(text("SELECT pg_is_in_recovery()")).scalar())
    catalogue_order = nearest_first(pair.stored, query_vector(model))
    assert names(on_replica) == catalogue_order  # the replica's view: no marker
    assert names(on_primary) == [MARKER, *catalogue_order]


@pytest.mark.slow
def test_a_product_added_on_the_primary_becomes_searchable_on_the_replica(pair: Pair, model: RetrievalModel) -> None:
    add_product(pair.primary, "new", query_vector(model), pair.model_a)
    pair.cluster.wait_for_replay()
    # A primary nothing answers on: only the replica can have served this search.
    unreachable = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/ynet")
    replica = make_engine(pair.replica_url)
    try:
        result = ask(SearchDatabases(unreachable, [replica]), the_only(model))
    finally:
        replica.dispose()
    assert names(result)[0] == "new"
    assert len(result.rows) == PRODUCTS + 1


@pytest.mark.slow
def test_a_replica_that_goes_away_hands_searches_on_with_a_warning(
    pair: Pair, model: RetrievalModel, caplog: pytest.LogCaptureFixture
) -> None:
    lag_with_a_marker(pair, model)
    port = free_port()  # nothing listens there
    replica, replica_name = pair.replica("s3cret"), pair.replica_url.set(password="***").render_as_string()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first = ask(pair.databases(f"postgresql://postgres:s3cret@127.0.0.1:{port}/ynet", replica), the_only(model))
    assert MARKER not in names(first)  # the next replica answered
    (warning,) = replica_warnings(caplog)
    assert warning.startswith(f"search database replica postgresql+psycopg://postgres:***@127.0.0.1:{port}/ynet ")
    assert f"searching on replica {replica_name};" in warning

    caplog.clear()
    pair.cluster.replica.resume_replay()
    pair.cluster.replica.stop()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            databases = pair.databases(replica)
            results = [ask(databases, the_only(model)) for _ in range(3)]
    finally:
        pair.cluster.replica.start()
    assert all(names(result)[0] == MARKER for result in results)  # the primary answered every one
    (warning,) = replica_warnings(caplog)
    assert warning.startswith(f"search database replica {replica_name} cannot answer (OperationalError: ")
    assert "searching on the primary" in warning
    assert "s3cret" not in caplog.text


@pytest.mark.slow
def test_lag_never_fails_a_search_nor_pairs_a_model_with_another_models_vectors(
    pair: Pair, model: RetrievalModel, caplog: pytest.LogCaptureFixture
) -> None:
    model_b = copy.copy(model)
    model_b.version = "lagging@b"
    loaded = {model.version: model, model_b.version: model_b}

    def follow(active: ActiveModel) -> RetrievalModel:
        """The HTTP service and the workers: whichever model the database they read says is active."""
        return loaded[active.version]

    q = query_vector(model)
    pair.cluster.replica.pause_replay()
    # On the primary: model B registered and embedded (one more product, B's only), then switched to.
    b_id = add_model(pair.primary, model_b.version, model.embedding_dim)
    stored_b = unit_vectors(PRODUCTS, model.embedding_dim, seed=8)
    add_embeddings(pair.primary, b_id, product_ids(pair.primary), stored_b)
    add_product(pair.primary, "b-only", q, b_id)
    registry.activate(pair.primary, model_b.version)
    assert registry.promote_if_complete(pair.primary) is not None
    databases = pair.databases()
    # A search that took the primary's active model (B) to the replica would find no vector there to compare.
    b_vectors = text("SELECT count(*) FROM ynet.embeddings WHERE model_id = :b")
    assert on_search_database(databases, lambda conn: conn.execute(b_vectors, {"b": b_id}).scalar()) == 0

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        on_replica = ask(databases, follow)
        assert replica_warnings(caplog) == []
        with_b = ask(databases, the_only(model_b))

    # The replica searches its own view: model A with A's vectors only.
    assert on_replica.model_version == model.version
    assert {row.model_version for row in on_replica.rows} == {model.version}
    assert names(on_replica) == nearest_first(pair.stored, q)
    # A caller holding B is answered by the primary, with B's vectors only.
    assert (with_b.model_version, {row.model_version for row in with_b.rows}) == (model_b.version, {model_b.version})
    assert names(with_b) == ["b-only", *nearest_first(stored_b, q)]
    (warning,) = replica_warnings(caplog)
    assert f"the active model is {model.version}, but the query model is {model_b.version}" in warning

    pair.cluster.replica.resume_replay()
    pair.cluster.wait_for_replay()
    caught_up = ask(pair.databases(), follow)  # a fresh set: the first one rests the replica for a while
    assert (caught_up.model_version, names(caught_up)) == (model_b.version, names(with_b))


def product_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM ynet.products ORDER BY id")).scalars())


# -- the SQL search worker and the HTTP service (slow) --------------------------------------------------------


@dataclass
class Preloaded:
    model: RetrievalModel

    def model_for(self, active: ActiveModel) -> RetrievalModel:
        return self.model


def png() -> bytes:
    out = io.BytesIO()
    IMAGE.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.slow
def test_the_sql_search_worker_keeps_its_queue_on_the_primary_and_reads_candidates_on_the_replica(
    pair: Pair, model: RetrievalModel, tmp_path: Path
) -> None:
    lag_with_a_marker(pair, model)
    with pair.primary.begin() as conn:
        request = conn.execute(
            text("INSERT INTO ynet.search_requests (image, k) VALUES (:image, :k) RETURNING id"),
            {"image": png(), "k": K},
        ).scalar_one()
    settings = Settings(search_database_urls=(pair.replica(),), data_dir=tmp_path)

    worker = RequestWorker(pair.primary, settings, Preloaded(model), RequestWorkerOptions())
    assert worker.serve_batch() == 1

    with pair.primary.connect() as conn:
        state = conn.execute(text("SELECT state FROM ynet.search_requests WHERE id = :id"), {"id": request}).scalar()
        rows = conn.execute(text("SELECT external_id FROM ynet.search_wait(:id, 0)"), {"id": request}).scalars().all()
    assert state == "done"
    assert len(rows) == PRODUCTS and MARKER not in rows  # the replica's view


@pytest.mark.slow
def test_the_http_service_searches_on_the_replica(pair: Pair, model: RetrievalModel, tmp_path: Path) -> None:
    env = {
        "YNET_DATABASE_URL": pair.primary.url.render_as_string(hide_password=False),
        "YNET_SEARCH_DATABASE_URLS": pair.replica(),
        "YNET_DATA_DIR": str(tmp_path / "data"),
    }
    served = start_serve(env, tmp_path / "serve.log")
    try:
        lag_with_a_marker(pair, model)
        found = served.post_form("/search", {"k": str(K), "rerank": "false"}, {"image": png()})
        similar = served.get(f"/products/p0/similar?k={K}")
    finally:
        served.stop()
    assert (found.status, similar.status) == (200, 200), (found.body, similar.body)
    searched = [row["external_id"] for row in found.json()["rows"]]
    assert len(searched) == PRODUCTS and MARKER not in searched
    alike = [row["external_id"] for row in similar.json()["rows"]]
    assert len(alike) == PRODUCTS - 1 and MARKER not in alike
    assert similar.json()["model_version"] == model.version
