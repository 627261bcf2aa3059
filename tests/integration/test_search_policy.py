"""One nearest-neighbour policy (`ynet_db.search.policy`) behind the Python prefilter, the ORM and the SQL
function: the function installed is the policy's rendering, a changed constant reaches both languages,
the ORM falls back to exact search like the others, and a result says whether the HNSW index ran."""

from __future__ import annotations

from importlib import import_module

import numpy as np
import pytest
from catalogue_vectors import exact_top, unit_vectors
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from ynet_db.db import migrate
from ynet_db.db.engine import make_engine
from ynet_db.db.tables import Product
from ynet_db.db.vectors import vector_text
from ynet_db.orm import similar_products
from ynet_db.presentation.report import summary_line
from ynet_db.search import policy
from ynet_db.search.nearest_sql import SIGNATURE, function_body, nearest_products_function
from ynet_db.search.prefilter import SearchRow, prefilter
from ynet_db.search.query import SearchResult

INSTALLED = f"SELECT prosrc, obj_description(oid, 'pg_proc') FROM pg_proc WHERE oid = '{SIGNATURE}'::regprocedure"


def index_scans(conn: Connection) -> int:
    index = "SELECT ('ynet.' || ynet.model_index_name(id))::regclass FROM ynet.models WHERE state = 'active'"
    return int(conn.execute(text(f"SELECT pg_stat_get_xact_numscans(({index}))")).scalar_one())


def test_the_installed_function_is_the_policys_rendering(engine: Engine) -> None:
    with engine.connect() as conn:
        body, comment = conn.execute(text(INSTALLED)).one()
    assert body == function_body()
    assert f"<= {policy.EXACT_BELOW} products" in comment


@pytest.mark.parametrize("setting", [policy.EF_SEARCH, policy.SCAN_TUPLES])
def test_sql_computes_the_settings_python_computes(engine: Engine, setting: policy.Scaled) -> None:
    ks = [1, 19, 20, 21, 199, 200, 201, 499, 500, 501, 1000]
    with engine.connect() as conn:
        in_sql = conn.execute(text(f"SELECT {setting.sql('k')} FROM unnest(CAST(:ks AS int[])) AS k"), {"ks": ks})
        assert in_sql.scalars().all() == [setting.value(k) for k in ks]


def test_a_changed_threshold_reaches_the_sql_function_and_the_prefilter(
    tagged_engine: Engine, tagged: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'common' matches 2,985 products: under the shipped threshold both search it exactly (see
    test_search_sql.py); under 2,000 both ask the index, and agree."""
    monkeypatch.setattr(policy, "EXACT_BELOW", 2000)
    with tagged_engine.begin() as conn:
        conn.execute(text(nearest_products_function()))
    query = unit_vectors(1, tagged.shape[1], seed=5)[0]
    sql = "SELECT external_id FROM ynet.nearest_products(CAST(:q AS vector), 20, tags_any => ARRAY['common'])"
    with tagged_engine.begin() as conn:
        before = index_scans(conn)
        in_sql = conn.execute(text(sql), {"q": vector_text(query)}).scalars().all()
        assert index_scans(conn) > before, "2,985 matches > 2,000: the model's HNSW index"
    in_python = prefilter(tagged_engine, query, candidates=20, filters={"tags": ["common"]})
    assert in_python.path == "ann"
    assert in_sql == [c.external_id for c in in_python.candidates]


@pytest.fixture
def short_index_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search list of one row and no iterative scan: the index returns at most one row."""
    monkeypatch.setattr(policy, "EF_SEARCH", policy.Scaled(per_candidate=0, minimum=1, maximum=1))
    monkeypatch.setattr(policy, "ITERATIVE_SCAN", "off")


@pytest.mark.usefixtures("short_index_scans")
def test_similar_products_fall_back_to_exact_search_when_the_index_comes_back_short(
    tagged_engine: Engine, tagged: np.ndarray
) -> None:
    forced = prefilter(tagged_engine, tagged[0], candidates=10, exact=False)
    assert (forced.path, forced.index_scanned, len(forced.candidates)) == ("ann", True, 1), "the index is short"
    with Session(tagged_engine) as session, session.begin():
        product = session.scalars(select(Product).where(Product.external_id == "p0")).one()
        similar = [p.external_id for p, _ in similar_products(session, product, 10)]
    assert similar == exact_top(tagged, np.arange(1, len(tagged)), tagged[0], 10)


def test_the_result_says_whether_the_hnsw_index_ran(tagged_engine: Engine, tagged: np.ndarray) -> None:
    query = unit_vectors(1, tagged.shape[1], seed=3)[0]
    unfiltered = prefilter(tagged_engine, query, candidates=10, exact=False)
    # 15 'rare' products: the planner answers the index's statement through the tags index and a sort.
    rare = prefilter(tagged_engine, query, candidates=10, filters={"tags": ["rare"]}, exact=False)
    exact = prefilter(tagged_engine, query, candidates=10, exact=True)
    assert [(f.path, f.index_scanned) for f in (unfiltered, rare, exact)] == [
        ("ann", True),
        ("ann", False),
        ("exact", False),
    ]
    assert [c.external_id for c in rare.candidates] == exact_top(tagged, np.arange(0, 3000, 200), query, 10)
    first = unfiltered.candidates[0]
    assert isinstance(first, SearchRow) and (first.rank, first.rerank_score, first.model_version) == (
        1,
        None,
        "small@1",
    )
    assert [c.rank for c in unfiltered.candidates] == list(range(1, 11))


def test_without_scan_counts_the_result_does_not_guess(tagged_engine: Engine, tagged: np.ndarray) -> None:
    uncounted = make_engine(tagged_engine.url, connect_args={"options": "-c track_counts=off"})
    try:
        found = prefilter(uncounted, unit_vectors(1, tagged.shape[1])[0], candidates=10, exact=False)
    finally:
        uncounted.dispose()
    assert (found.path, found.index_scanned, len(found.candidates)) == ("ann", None, 10)


def test_below_0011_the_hand_written_function_is_back_and_up_renders_it_again(empty_engine: Engine) -> None:
    hand_written = import_module(
        "ynet_db.migrations.versions.0008_privileges_and_sources"
    )._nearest_products_with_checks()
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "0010")
    with empty_engine.connect() as conn:
        body, _ = conn.execute(text(INSTALLED)).one()
    assert body in hand_written and body != function_body()
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        assert conn.execute(text(INSTALLED)).one()[0] == function_body()


@pytest.mark.parametrize(
    ("path", "index_scanned", "shown"),
    [
        ("ann", True, "ann prefilter, "),
        ("ann", False, "ann prefilter (the planner did not use the HNSW index), "),
        ("ann", None, "ann prefilter, "),
        ("exact", False, "exact prefilter, "),
    ],
)
def test_the_summary_says_when_the_index_statement_ran_without_the_index(
    path: str, index_scanned: bool | None, shown: str
) -> None:
    result = SearchResult([], "m@1", path, False, 10, 10, False, index_scanned=index_scanned)  # type: ignore[arg-type]
    assert summary_line(result) == f"model m@1, {shown}10/10 candidates, not re-ranked"
