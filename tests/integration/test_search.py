"""Search on a real PostgreSQL: the two stages against a NumPy reference, filters that still return k
rows, settings that stay in their transaction, one model's vectors only, and filters bound as data."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from catalogue_vectors import (
    add_embeddings,
    add_model,
    add_products,
    catalogue,
    exact_top,
    photo,
    set_state,
    unit_vectors,
)
from PIL import Image
from sqlalchemy import Engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ynet_db.db.engine import make_engine
from ynet_db.db.tables import Product
from ynet_db.ingestion.embed import run_once
from ynet_db.models.registry import ModelIdentity, activate, register
from ynet_db.nn.model import RetrievalModel
from ynet_db.search import policy
from ynet_db.search.filters import FilterError, compile_filters
from ynet_db.search.prefilter import ActiveModel, SearchError, prefilter, prefilter_statement
from ynet_db.search.query import search

DIM = 32


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return RetrievalModel.load_default()


def reference(
    model: RetrievalModel, image: Image.Image, stored: np.ndarray, candidates: int, k: int, rerank: bool
) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """Brute force: exact cosine distances in float64, the top candidates, then model.rerank on them."""
    street = model.encode_street(model.preprocess(image)[None])
    q = street.vectors[0].numpy().astype(np.float64)
    distances = 1.0 - stored.astype(np.float64) @ q / (np.linalg.norm(stored, axis=1) * np.linalg.norm(q))
    top = np.argsort(distances, kind="stable")[:candidates]
    if not rerank:
        return top[:k].tolist(), distances[top[:k]], None
    scores = model.rerank(street.maps[0], torch.from_numpy(stored[top])).numpy()
    order = np.argsort(-scores, kind="stable")[:k]
    return top[order].tolist(), distances[top[order]], scores[order]


@pytest.fixture
def default_catalogue(engine: Engine, model: RetrievalModel) -> np.ndarray:
    stored = unit_vectors(300, model.embedding_dim, seed=1)
    catalogue(engine, model.version, stored)
    return stored


def planted(model: RetrievalModel, image: Image.Image, n: int = 300, near: int = 40) -> np.ndarray:
    """`n` random unit vectors, of which `near` (every 7th) lie at cosine 0.5 to 0.9 from the query's:
    far from the rest (cosine about 0 at this dimension), so an index scan for `near` finds exactly them."""
    q = model.encode_street(model.preprocess(image)[None]).vectors[0].numpy().astype(np.float64)
    stored = unit_vectors(n, model.embedding_dim, seed=1).astype(np.float64)
    for rank, i in enumerate(range(0, 7 * near, 7)):
        cosine = 0.9 - 0.4 * rank / near
        away = stored[i] - (stored[i] @ q) * q
        stored[i] = cosine * q + np.sqrt(1 - cosine**2) * away / np.linalg.norm(away)
    return stored.astype(np.float32)


HNSW_SCANS = """
    SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = 'ynet' AND indexrelname = ynet.model_index_name(:id)
"""


def hnsw_scans(engine: Engine, model_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(HNSW_SCANS), {"id": model_id}).scalar_one())


def flushed_hnsw_scans(engine: Engine, model_id: int) -> int:
    """Index scans counted so far, this engine's connection included: a backend reports its counts when
    it next goes idle, which pg_stat_force_next_flush makes the end of that very call."""
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
    return hnsw_scans(engine, model_id)


@pytest.mark.parametrize(("exact", "candidates", "path"), [(True, 50, "exact"), (None, 40, "ann")])
def test_two_stages_equal_a_numpy_brute_force(
    engine: Engine, model: RetrievalModel, exact: bool | None, candidates: int, path: str
) -> None:
    image = photo(7)
    stored = planted(model, image)
    model_id = catalogue(engine, model.version, stored)
    # The planner answers a 1280-d catalogue this small (and one of 2,000, tried) with a scan and a sort,
    # which the ANN SQL allows: with both disabled it walks the model's HNSW index, as it does at full size.
    # One pooled connection, so the one that searched is the one that reports its index scans.
    walk = {"options": "-c enable_seqscan=off -c enable_sort=off"}
    one = make_engine(engine.url, pool_size=1, max_overflow=0, connect_args=walk)
    try:
        before = hnsw_scans(one, model_id)
        result = search(one, image, k=10, candidates=candidates, rerank=True, model=model, exact=exact)
        scans = flushed_hnsw_scans(one, model_id) - before
    finally:
        one.dispose()
    # Fewer candidates than products (40 of 300), one walk of the HNSW index on the ANN path, none on the exact.
    assert (len(stored), scans) == (300, 1 if path == "ann" else 0)
    want, distances, scores = reference(model, image, stored, candidates, 10, rerank=True)
    assert (result.path, result.short, result.reranked, result.model_version) == (path, False, True, model.version)
    assert [row.external_id for row in result.rows] == [f"p{i}" for i in want]
    assert [row.rank for row in result.rows] == list(range(1, 11))
    np.testing.assert_allclose([row.distance for row in result.rows], distances, atol=1e-5)
    assert scores is not None
    np.testing.assert_allclose([row.rerank_score for row in result.rows], scores, rtol=1e-5, atol=1e-6)


def test_candidates_are_not_reranked_unless_the_model_was_measured_to_help(
    engine: Engine, model: RetrievalModel, default_catalogue: np.ndarray
) -> None:
    model = copy.copy(model)
    model.context_calibration = None  # the default as it would be without its shipped evidence
    assert not model.rerank_measured_to_help
    result = search(engine, photo(8), k=5, candidates=40, model=model, exact=True)
    want, distances, _ = reference(model, photo(8), default_catalogue, 40, 5, rerank=False)
    assert not result.reranked and all(row.rerank_score is None for row in result.rows)
    assert [row.external_id for row in result.rows] == [f"p{i}" for i in want]
    first = result.rows[0]
    assert (first.category, first.tags, first.image_uri, first.model_version) == (
        "dress" if want[0] % 2 else "skirt",
        [],
        f"/img/{want[0]}.jpg",
        model.version,
    )


def test_a_query_model_that_is_not_the_active_one_is_refused(engine: Engine, model: RetrievalModel) -> None:
    catalogue(engine, "other@1", unit_vectors(5, model.embedding_dim))
    with pytest.raises(SearchError) as raised:
        search(engine, photo(1), model=model)
    assert str(raised.value) == (
        f"the active model is other@1, but the query model is {model.version}: vectors of two models are never "
        "compared; load the active model"
    )


def test_without_an_active_model_search_says_what_to_do(engine: Engine, model: RetrievalModel) -> None:
    with pytest.raises(SearchError) as raised:
        search(engine, photo(1), model=model)
    assert str(raised.value) == "no model is active: run `ynet-db model activate NAME` once its embeddings exist"


def test_a_database_error_in_the_prefilter_is_sqlalchemys_as_callers_expect(
    tagged_url: URL, tagged_engine: Engine
) -> None:
    # The replicas' fall-back and the HTTP service's 503 catch SQLAlchemy's errors: the prefilter's own
    # binary fetch must raise them too, not the driver's.
    timid = make_engine(tagged_url, connect_args={"options": "-c lock_timeout=100"})
    try:
        with tagged_engine.begin() as holder:
            holder.execute(text("LOCK TABLE ynet.embeddings IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(OperationalError, match="lock timeout"):
                prefilter(timid, unit_vectors(1, DIM, seed=3)[0], candidates=10, exact=False)
        assert len(prefilter(timid, unit_vectors(1, DIM, seed=3)[0], candidates=10).candidates) == 10, "usable again"
    finally:
        timid.dispose()


# -- filters that still return k rows ---------------------------------------------------------------


@pytest.mark.parametrize("exact", [None, False, True])
def test_a_selective_tag_filter_still_returns_k_rows(
    tagged_engine: Engine, tagged: np.ndarray, exact: bool | None
) -> None:
    query = unit_vectors(1, DIM, seed=3)[0]
    found = prefilter(tagged_engine, query, candidates=10, filters={"tags": {"any": ["rare"]}}, exact=exact)
    rare = np.arange(0, 3000, 200)
    assert [c.external_id for c in found.candidates] == exact_top(tagged, rare, query, 10)
    assert not found.short and found.path == ("ann" if exact is False else "exact")


def test_a_filter_matching_fewer_than_asked_is_reported_short(tagged_engine: Engine, tagged: np.ndarray) -> None:
    found = prefilter(tagged_engine, unit_vectors(1, DIM, seed=3)[0], candidates=40, filters={"tags": ["rare"]})
    assert (len(found.candidates), found.short, found.path) == (15, True, "exact")


@pytest.fixture
def exact_below_2000(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tagged catalogue's 3,000 products would all be searched exactly under the default threshold."""
    monkeypatch.setattr(policy, "EXACT_BELOW", 2000)


@pytest.mark.usefixtures("exact_below_2000")
def test_a_broad_filter_uses_the_index_and_returns_k_rows(tagged_engine: Engine, tagged: np.ndarray) -> None:
    query = unit_vectors(1, DIM, seed=4)[0]
    found = prefilter(tagged_engine, query, candidates=50, filters={"tags": ["common"]})
    assert found.path == "ann" and len(found.candidates) == 50 and not found.short
    common = np.array([i for i in range(3000) if i % 200])
    recall = len({c.external_id for c in found.candidates} & set(exact_top(tagged, common, query, 50))) / 50
    assert recall >= 0.9


@pytest.mark.usefixtures("exact_below_2000")
def test_search_settings_do_not_leak_to_the_next_pooled_connection(tagged_url: URL, tagged: np.ndarray) -> None:
    one = make_engine(tagged_url, pool_size=1, max_overflow=0)
    try:
        with one.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        found = prefilter(one, unit_vectors(1, DIM, seed=5)[0], candidates=300, filters={"tags": ["common"]})
        assert found.path == "ann"
        with one.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid  # the same pooled connection
            shown = [conn.execute(text(f"SHOW {name}")).scalar() for name in SETTINGS]
    finally:
        one.dispose()
    assert shown == ["40", "off", "20000", "auto"]


SETTINGS = ("hnsw.ef_search", "hnsw.iterative_scan", "hnsw.max_scan_tuples", "plan_cache_mode")


# -- one model's vectors ------------------------------------------------------------------------------


def test_vectors_of_a_non_active_model_are_never_used(engine: Engine) -> None:
    query = unit_vectors(1, DIM, seed=6)[0]
    active_vectors = unit_vectors(50, DIM, seed=7)
    ids = add_products(engine, 60)
    old, new = add_model(engine, "old@1", DIM), add_model(engine, "new@1", DIM)
    add_embeddings(engine, new, ids[:50], active_vectors)
    # The retired model holds the query itself for every product, and ten products only it embedded.
    add_embeddings(engine, old, ids, np.repeat(query[None], 60, axis=0))
    set_state(engine, old, "retired")
    set_state(engine, new, "active")
    for exact in (True, False):
        found = prefilter(engine, query, candidates=60, exact=exact)
        assert len(found.candidates) == 50 and {c.external_id for c in found.candidates} == {f"p{i}" for i in range(50)}
        np.testing.assert_allclose(
            [c.distance for c in found.candidates], np.sort(1.0 - active_vectors @ query), atol=1e-5
        )


def test_a_query_vector_of_another_dimension_is_refused(tagged_engine: Engine, tagged: np.ndarray) -> None:
    with pytest.raises(SearchError) as raised:
        prefilter(tagged_engine, np.zeros(8, dtype=np.float32), candidates=10)
    assert str(raised.value) == "the query vector has shape (8,), model small@1 stores 32 dimensions"


# -- a real product, embedded by the pipeline, found by its own photo -----------------------------------


def test_a_product_inserted_and_embedded_is_found_by_its_own_shop_image(
    engine: Engine, model: RetrievalModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(tmp_path))  # the worker's fetch and the search read the photo
    record = register(engine, ModelIdentity.of(model))
    decoys = add_products(engine, 40)
    add_embeddings(engine, record.id, decoys, unit_vectors(40, model.embedding_dim, seed=9))
    activate(engine, model.version)
    image = tmp_path / "shop.png"
    photo(11, size=96).save(image)
    with Session(engine) as session:
        session.add(Product(external_id="sku-new", category="dress", tags=["color:red"], image_uri=str(image)))
        session.commit()
    assert run_once(engine, model, "test", 4).done == 1
    result = search(engine, image, k=3, candidates=20, model=model)
    assert result.rows[0].external_id == "sku-new" and result.rows[0].distance < 1e-4


# -- filters are data -------------------------------------------------------------------------------------

HOSTILE = ["x' OR '1'='1", "'; DROP TABLE ynet.products; --", "-- comment", '"p1"', "$$ $$", "p1' --"]


def test_hostile_filter_values_never_reach_the_sql_text(tagged_engine: Engine, tagged: np.ndarray) -> None:
    filters = {"category": {"in": HOSTILE}, "tags": {"any": HOSTILE, "all": HOSTILE}, "external_id": HOSTILE[1]}
    statement = prefilter_statement(
        ActiveModel(1, "small@1", DIM), np.zeros(DIM, np.float32), compile_filters(filters), 10, exact=False
    )
    compiled = str(statement.compile(dialect=postgresql.dialect()))
    assert not [value for value in HOSTILE if value in compiled]
    for exact in (None, True, False):
        found = prefilter(tagged_engine, unit_vectors(1, DIM)[0], candidates=10, filters=filters, exact=exact)
        assert found.candidates == []
    with tagged_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ynet.products")).scalar() == 3000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"filters": {"title": "x"}},
            "unknown filter field 'title'; allowed: category, external_id, in_stock, price, tags",
        ),
        ({"filters": {"category": "a\x00"}}, "filter 'category': strings may not contain NUL bytes"),
        ({"k": 10**6}, "k must be between 1 and 200, got 1000000"),
        ({"candidates": 5000}, "candidates must be between 1 and 1000, got 5000"),
        ({"k": 50, "candidates": 10}, "candidates (10) must be at least k (50)"),
    ],
)
def test_bad_queries_are_refused_before_any_work(engine: Engine, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError) as raised:
        search(engine, b"not even an image", model=Unloaded(), **kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == message


class Unloaded:
    """A model that must never be reached."""

    version = "unused"

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the model was used ({name}) for a query that should have been refused")
