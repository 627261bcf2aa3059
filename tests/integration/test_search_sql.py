"""Search from SQL (the functions of migrations 0003 and 0007) and from the ORM, against the Python prefilter."""

from __future__ import annotations

import numpy as np
import pytest
from catalogue_vectors import catalogue, exact_top, unit_vectors
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ynet_db.db.tables import Embedding, Product
from ynet_db.db.vectors import vector_text
from ynet_db.orm import active_model as active_orm_model
from ynet_db.orm import (
    matching,
    model_constant,
    nearest_to,
    product_by_external_id,
    product_embedding,
    similar_products,
)
from ynet_db.search.prefilter import SearchError, prefilter

DIM = 16


@pytest.fixture
def vectors(engine: Engine) -> np.ndarray:
    stored = unit_vectors(400, DIM, seed=3)
    catalogue(engine, "sql@1", stored, tags=lambda i: ["rare"] if i % 50 == 0 else ["common", f"n{i % 3}"])
    return stored


def nearest(engine: Engine, sql: str, **params: object) -> list[tuple[str, float]]:
    with engine.begin() as conn:
        return [(row.external_id, row.distance) for row in conn.execute(text(sql), params)]


@pytest.mark.parametrize(
    ("arguments", "filters"),
    [
        ("", None),
        (", category => 'dress'", {"category": "dress"}),
        (", tags_any => ARRAY['rare']", {"tags": {"any": ["rare"]}}),
        (", tags_all => ARRAY['common', 'n1']", {"tags": {"all": ["common", "n1"]}}),
    ],
)
def test_nearest_products_agrees_with_the_python_prefilter(
    engine: Engine, vectors: np.ndarray, arguments: str, filters: dict[str, object] | None
) -> None:
    query = unit_vectors(1, DIM, seed=4)[0]
    found = nearest(
        engine, f"SELECT * FROM ynet.nearest_products(CAST(:q AS vector), 8{arguments})", q=vector_text(query)
    )
    want = prefilter(engine, query, candidates=8, filters=filters, exact=True).candidates
    assert [name for name, _ in found] == [c.external_id for c in want]
    np.testing.assert_allclose([d for _, d in found], [c.distance for c in want], atol=1e-6)


def index_scans(conn: Connection) -> int:
    """Scans of the active model's HNSW index so far in this transaction (counted before any flush)."""
    index = "SELECT ('ynet.' || ynet.model_index_name(id))::regclass FROM ynet.models WHERE state = 'active'"
    return int(conn.execute(text(f"SELECT pg_stat_get_xact_numscans(({index}))")).scalar_one())


def test_a_filter_matching_up_to_20000_products_is_searched_exactly(tagged_engine: Engine, tagged: np.ndarray) -> None:
    query = unit_vectors(1, tagged.shape[1], seed=5)[0]
    sql = "SELECT external_id FROM ynet.nearest_products(CAST(:q AS vector), 10, tags_any => ARRAY['common'])"
    with tagged_engine.begin() as conn:
        found = conn.execute(text(sql), {"q": vector_text(query)}).scalars().all()
        assert index_scans(conn) == 0, "2,985 matches: exact search, as the Python prefilter decides"
        conn.execute(text("SELECT * FROM ynet.nearest_products(CAST(:q AS vector), 10)"), {"q": vector_text(query)})
        assert index_scans(conn) == 1, "no filter: the model's HNSW index"
    common = np.array([i for i in range(len(tagged)) if i % 200])
    assert found == exact_top(tagged, common, query, 10)


def test_the_index_scan_agrees_with_the_python_prefilter(tagged_engine: Engine, tagged: np.ndarray) -> None:
    query = unit_vectors(1, tagged.shape[1], seed=6)[0]
    found = nearest(tagged_engine, "SELECT * FROM ynet.nearest_products(CAST(:q AS vector), 256)", q=vector_text(query))
    want = prefilter(tagged_engine, query, candidates=256, exact=False)
    assert want.path == "ann"
    assert [name for name, _ in found] == [c.external_id for c in want.candidates]
    np.testing.assert_allclose([d for _, d in found], [c.distance for c in want.candidates], atol=1e-6)


def test_more_like_this_excludes_the_product_and_follows_its_stored_vector(engine: Engine, vectors: np.ndarray) -> None:
    found = nearest(engine, "SELECT * FROM ynet.more_like_this('p7', 5)")
    distances = 1.0 - vectors @ vectors[7]
    distances[7] = np.inf
    assert [name for name, _ in found] == [f"p{i}" for i in np.argsort(distances)[:5]]


def test_the_functions_leave_no_settings_behind_even_inside_a_transaction(engine: Engine, vectors: np.ndarray) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT * FROM ynet.more_like_this('p1', 300)")).all()
        shown = [conn.execute(text(f"SHOW {name}")).scalar() for name in ("hnsw.ef_search", "hnsw.iterative_scan")]
    assert shown == ["40", "off"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM ynet.more_like_this('nope''; DROP TABLE ynet.products; --', 5)", "no product with external id"),
        ("SELECT * FROM ynet.nearest_products(CAST(:q AS vector), 5000)", "k must be between 1 and 1000, got 5000"),
        ("SELECT * FROM ynet.nearest_products('[1,2,3]'::vector, 5)", "the query has 3 dimensions"),
        ("SELECT * FROM ynet.nearest_products(NULL::vector, 5)", "the query vector is NULL"),
        (
            f"SELECT * FROM ynet.nearest_products(CAST(array_fill(0, ARRAY[{DIM}]) AS vector), 5)",
            "the query vector is all zeros: its cosine distance to every product is undefined",
        ),
    ],
)
def test_the_functions_refuse_bad_arguments(engine: Engine, vectors: np.ndarray, sql: str, message: str) -> None:
    with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
        conn.execute(text(sql), {"q": vector_text(vectors[0])} if ":q" in sql else {})
    assert message in str(raised.value.orig)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ynet.products")).scalar() == 400


def test_a_hostile_category_is_data(engine: Engine, vectors: np.ndarray) -> None:
    sql = "SELECT * FROM ynet.nearest_products(CAST(:q AS vector), 5, category => :c)"
    assert nearest(engine, sql, q=vector_text(vectors[0]), c="dress' OR '1'='1") == []


def test_orm_similar_products_match_more_like_this(engine: Engine, vectors: np.ndarray) -> None:
    with Session(engine) as session, session.begin():
        product = session.scalars(select(Product).where(Product.external_id == "p3")).one()
        np.testing.assert_array_equal(product_embedding(session, product), vectors[3])
        similar = [
            (p.external_id, round(d, 6)) for p, d in similar_products(session, product, 6, {"category": "dress"})
        ]
    want = nearest(engine, "SELECT * FROM ynet.more_like_this('p3', 6, category => 'dress')")
    assert similar == [(name, round(d, 6)) for name, d in want]


def test_filters_and_distances_compose_in_ordinary_selects(engine: Engine, vectors: np.ndarray) -> None:
    with Session(engine) as session:
        model = active_orm_model(session)
        distance = nearest_to(vectors[0], model)
        statement = (
            select(Product.external_id)
            .join(Embedding, Embedding.product_id == Product.id)
            .where(Embedding.model_id == model_constant(model.id), matching({"tags": ["rare"]}) & (Product.id > 1))
            .order_by(distance)
            .limit(3)
        )
        names = session.scalars(statement).all()
    rare = np.arange(50, 400, 50)
    assert names == [f"p{rare[i]}" for i in np.argsort(1.0 - vectors[rare] @ vectors[0])[:3]]


def test_nearest_to_orders_by_a_halfvec_index_in_halfvec(engine: Engine, vectors: np.ndarray) -> None:
    """A large catalogue's index stores halfvec: an ORM select ordered by `nearest_to` is still served by it."""
    with Session(engine) as session:
        model = active_orm_model(session)
        session.execute(text("SELECT ynet.build_model_index(:id, element => 'halfvec')"), {"id": model.id})
        statement = (
            select(Product.external_id)
            .join(Embedding, Embedding.product_id == Product.id)
            .where(Embedding.model_id == model_constant(model.id))
            .order_by(nearest_to(vectors[0], model))
            .limit(5)
        )
        for plan_off in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):  # 400 rows: it would rather sort
            session.execute(text(f"SET LOCAL {plan_off} = off"))
        plan = "\n".join(session.scalars(text("EXPLAIN " + str(statement.compile(compile_kwargs=LITERAL)))))
        names = session.scalars(statement).all()
    assert f"embeddings_hnsw_model_{model.id}" in plan
    assert names == [f"p{i}" for i in np.argsort(1.0 - vectors @ vectors[0])[:5]]


LITERAL = {"literal_binds": True}


def test_more_like_this_asks_for_a_source_when_several_use_the_external_id(engine: Engine, vectors: np.ndarray) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ynet.products (source, external_id, category, image_uri) "
                "VALUES ('shop.items', 'p7', 'coat', '/shop/7.jpg')"
            )
        )
    with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
        conn.execute(text("SELECT * FROM ynet.more_like_this('p7', 5)")).all()
    assert "external id 'p7' is used by several sources (import, shop.items): pass source => one of them" in str(
        raised.value.orig
    )
    found = nearest(engine, "SELECT * FROM ynet.more_like_this('p7', 5, source => 'import')")
    distances = 1.0 - vectors @ vectors[7]
    distances[7] = np.inf
    assert [name for name, _ in found] == [f"p{i}" for i in np.argsort(distances)[:5]]
    with pytest.raises(DBAPIError, match="product 'p7' has no embedding"), engine.begin() as conn:
        conn.execute(text("SELECT * FROM ynet.more_like_this('p7', 5, source => 'shop.items')")).all()


def test_orm_finds_a_product_by_external_id_and_source(engine: Engine, vectors: np.ndarray) -> None:
    with Session(engine) as session:
        session.add(Product(source="shop.items", external_id="p7", category="coat", image_uri="/shop/7.jpg"))
        session.commit()
        with pytest.raises(SearchError, match=r"external id 'p7' is used by several sources \(import, shop.items\)"):
            product_by_external_id(session, "p7")
        assert product_by_external_id(session, "p7", "shop.items").category == "coat"
        assert product_by_external_id(session, "p8").source == "import"
        with pytest.raises(SearchError, match="no product with external id 'p8' in shop.items"):
            product_by_external_id(session, "p8", "shop.items")
