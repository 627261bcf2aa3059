"""The SQL prefilter: the `candidates` nearest products under the active model, in one transaction.

Only the active model's rows are read, through its partial HNSW index
(`WHERE model_id = m ORDER BY embedding::vector(d) <=> q`; the model id and dimension are integers from
`ynet.models`, written into the SQL so the planner can match the index). The transaction sets, with
`set_config(..., true)`, `hnsw.ef_search` (twice the candidates), iterative index scans, so a filter
that pgvector applies after the index scan still returns k rows, and plans made for this query's
values; nothing leaks to the next user of the pooled connection. A filter matching up to 20,000
products is answered by exact search instead, and so is an index scan that came back short while
more rows match (design principle 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, Engine, Float, Integer, String, bindparam, cast, func, select, text
from sqlalchemy.sql import ColumnElement, Select

from ynet_db.db.models import Embedding, Product
from ynet_db.db.vectors import stored_vectors, vector_text
from ynet_db.filters import FilterSchema, compile_filters

EXACT_BELOW = 20_000
"""A filter matching at most this many products is answered by exact search. Measured at 100,000
1280-d products on 2 cores: exact search over 10,000 matches took 34 ms, while the HNSW scan that
iterates until 256 of its rows pass a 10% filter took 470 ms (it walks ten rows for every one kept)."""
MIN_EF_SEARCH = 40
"""pgvector's default ef_search; fewer candidates than this still search at its quality."""
EF_SEARCH_PER_CANDIDATE = 2
"""The HNSW search list holds twice the candidates asked. In the search benchmark (1280-d), recall of
the 256 candidates against exact search was 0.90 at 10,000 and 0.97 at 100,000 products with exactly
as many, 1.00 and 0.99 with twice."""
MAX_EF_SEARCH = 1000
"""pgvector's upper bound for hnsw.ef_search."""
MIN_SCAN_TUPLES = 20_000
"""pgvector's default hnsw.max_scan_tuples; raised with the candidate count (100 tuples each)."""

Path_ = Literal["ann", "exact"]


class SearchError(RuntimeError):
    """A search that cannot be answered as asked (no active model, the wrong model); says why."""


class NoActiveModel(SearchError):
    """No model is active yet: a state of the deployment, not a fault of the query."""


NO_ACTIVE_MODEL = "no model is active: run `ynet-db model activate NAME` once its embeddings exist"


@dataclass(frozen=True)
class ActiveModel:
    id: int
    version: str
    embedding_dim: int
    context_rerank: dict[str, Any] | None = None
    """The registry's context calibration of this model (`ynet-db model calibrate`), if any."""


def active_model(conn: Connection) -> ActiveModel:
    row = conn.execute(
        text("SELECT id, version, embedding_dim, config -> 'context_rerank' FROM ynet.models WHERE state = 'active'")
    ).first()
    if row is None:
        raise NoActiveModel(NO_ACTIVE_MODEL)
    return ActiveModel(*row)


# -- stage 1: the SQL prefilter ----------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    product_id: int
    external_id: str
    title: str
    category: str
    tags: list[str]
    image_uri: str
    distance: float
    """Cosine distance of the stored vector to the query vector (0 = same direction)."""


@dataclass(frozen=True)
class Prefilter:
    candidates: list[Candidate]
    vectors: np.ndarray | None
    """float32 [N, D] stored vectors of the candidates, in order (when asked for)."""
    path: Path_
    asked: int

    @property
    def short(self) -> bool:
        return len(self.candidates) < self.asked


def prefilter_statement(
    model: ActiveModel,
    query: np.ndarray,
    where: ColumnElement[bool],
    limit: int,
    *,
    exact: bool,
    with_vectors: bool = False,
) -> Select[Any]:
    """The candidate query. ANN orders by the indexed expression; exact by one no index has.

    With vectors, the ranking runs in a subquery and the outer query encodes only the rows that survive
    its limit: encoded below the sort, every row matching the filter would be (10 ms per 1,000 at 1280-d).
    """
    e, p = Embedding.__table__.c, Product.__table__.c
    distance = distance_to(query, model.embedding_dim, indexed=not exact)
    columns = [p.id, p.external_id, p.title, p.category, p.tags, p.image_uri, distance.label("distance")]
    nearest = (
        select(*columns, *([e.embedding.label("stored")] if with_vectors else []))
        .select_from(Embedding.__table__.join(Product.__table__, p.id == e.product_id))
        .where(e.model_id == model_constant(model.id), where)
        .order_by(distance)
        .limit(bindparam("limit", limit, Integer))
    )
    if not with_vectors:
        return nearest
    ranked = nearest.subquery("nearest")
    kept = [column for column in ranked.c if column.name != "stored"]
    return select(*kept, func.vector_send(ranked.c.stored).label("vector"))


def model_constant(model_id: int) -> ColumnElement[int]:
    """A model id rendered inline. It is an integer from ynet.models, never user text: a partial index
    (WHERE model_id = m) only serves a plan that knows the constant, and a prepared statement's
    generic plan would not."""
    return bindparam("model_id", int(model_id), Integer, literal_execute=True)


def distance_to(query: np.ndarray, dim: int, *, indexed: bool = True) -> ColumnElement[float]:
    """Cosine distance of stored vectors to `query`: in the form the model's HNSW index serves
    (`embedding::vector(dim) <=> q`), or, for exact search, in a form no index has."""
    from pgvector.sqlalchemy import Vector

    q = cast(bindparam(None, vector_text(query), String), Vector(dim))
    stored = cast(Embedding.__table__.c.embedding, Vector(dim)) if indexed else Embedding.__table__.c.embedding
    return stored.op("<=>", return_type=Float())(q)


def count_capped(conn: Connection, model: ActiveModel, where: ColumnElement[bool], cap: int) -> int:
    """Embedded products of the model that match, counting no further than `cap`."""
    e, p = Embedding.__table__.c, Product.__table__.c
    rows = (
        select(e.product_id)
        .select_from(Embedding.__table__.join(Product.__table__, p.id == e.product_id))
        .where(e.model_id == model.id, where)
    )
    return _count(conn, rows, cap)


def count_matching(conn: Connection, where: ColumnElement[bool], cap: int) -> int:
    """Products that match, counting no further than `cap`: the products table alone (through its
    indexes), as joining each match to its embedding would cost as much as the exact search itself."""
    return _count(conn, select(Product.__table__.c.id).where(where), cap)


def _count(conn: Connection, rows: Select[Any], cap: int) -> int:
    inner = rows.limit(cap).subquery()
    return int(conn.execute(select(func.count()).select_from(inner)).scalar_one())


SET_LOCAL = text(
    "SELECT set_config(name, value, true) "
    "FROM unnest(CAST(:names AS text[]), CAST(:values AS text[])) AS s(name, value)"
)


def set_local(conn: Connection, settings: Mapping[str, object]) -> None:
    """Transaction-scoped settings (SET LOCAL), in one round trip: gone at commit or rollback, never
    left in the pool."""
    conn.execute(SET_LOCAL, {"names": list(settings), "values": [str(value) for value in settings.values()]})


CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}
"""psycopg prepares a statement run five times on one connection, and PostgreSQL may then switch to a
generic plan that ignores the filter's values: a 10% tag filter at 100,000 products went from 40 ms
to 460 ms on a pooled connection's sixth query. A plan for these values costs well under 1 ms."""


def ann_settings(candidates: int) -> dict[str, object]:
    return {
        "hnsw.ef_search": min(max(EF_SEARCH_PER_CANDIDATE * candidates, MIN_EF_SEARCH), MAX_EF_SEARCH),
        # relaxed_order: the scan goes on past ef_search until enough rows pass the filter; the order
        # may be slightly off, so the rows are re-sorted by distance afterwards.
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.max_scan_tuples": max(MIN_SCAN_TUPLES, 100 * candidates),
    }


def prefilter(
    engine: Engine,
    query: np.ndarray,
    *,
    candidates: int,
    filters: Mapping[str, Any] | None = None,
    schema: FilterSchema | None = None,
    exact: bool | None = None,
    with_vectors: bool = False,
    model: ActiveModel | None = None,
) -> Prefilter:
    """The `candidates` nearest embedded products of the active model that pass the filters.

    `exact`: None decides (see the module docstring); True or False forces a path.
    """
    where = compile_filters(filters) if schema is None else compile_filters(filters, schema)
    with engine.begin() as conn:
        model = model or active_model(conn)
        if query.shape != (model.embedding_dim,):
            raise SearchError(
                f"the query vector has shape {tuple(query.shape)}, model {model.version} stores "
                f"{model.embedding_dim} dimensions"
            )
        set_local(conn, CUSTOM_PLANS | ann_settings(candidates))
        if exact is None and filters:
            exact = count_matching(conn, where, EXACT_BELOW + 1) <= EXACT_BELOW
        if not exact:
            rows = _fetch(conn, model, query, where, candidates, exact=False, with_vectors=with_vectors)
            if len(rows) == candidates or exact is False or count_capped(conn, model, where, candidates) <= len(rows):
                return _prefilter(rows, "ann", candidates, with_vectors)
        rows = _fetch(conn, model, query, where, candidates, exact=True, with_vectors=with_vectors)
        return _prefilter(rows, "exact", candidates, with_vectors)


def _fetch(
    conn: Connection,
    model: ActiveModel,
    query: np.ndarray,
    where: ColumnElement[bool],
    limit: int,
    *,
    exact: bool,
    with_vectors: bool,
) -> list[Any]:
    statement = prefilter_statement(model, query, where, limit, exact=exact, with_vectors=with_vectors)
    # Iterative scans return rows in relaxed order; ties broken by id so both paths agree exactly.
    return sorted(conn.execute(statement).all(), key=lambda row: (row.distance, row.id))


def _prefilter(rows: Sequence[Any], path: Path_, asked: int, with_vectors: bool) -> Prefilter:
    found = [Candidate(r.id, r.external_id, r.title, r.category, list(r.tags), r.image_uri, r.distance) for r in rows]
    vectors = stored_vectors([r.vector for r in rows]) if with_vectors else None
    return Prefilter(found, vectors, path, asked)
