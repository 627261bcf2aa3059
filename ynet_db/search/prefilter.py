"""The SQL prefilter: the `candidates` nearest products under the active model, by the one
nearest-neighbour policy (`policy.py`: the search list, iterative scans, exact search for a filter that
matches few products and for an index scan that came back short).

Only the active model's rows are read, through its partial HNSW index
(`WHERE model_id = m ORDER BY embedding::vector(d) <=> q`, or `::halfvec(d)` where the index stores
half-precision elements, `index_links`; the model id and dimension are integers from `ynet.models`, written
into the SQL so the planner can match the index). The element type is read from the index that serves, in
the search's first round trip, so an index converted by a rebuild serves from the moment it is built.
The settings are set with `set_config(..., true)`: they end with the transaction and never reach the next
user of a pooled connection. `prefilter` runs in a transaction of its own; `nearest` runs in the caller's
(`ynet_db.orm.similar_products`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal, Protocol

import numpy as np
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement, Select

from ynet_db.db.tables import Embedding, Product
from ynet_db.db.vectors import stored_vectors, vector_text
from ynet_db.models import registry
from ynet_db.models.registry import ModelRecord
from ynet_db.search import policy
from ynet_db.search.filters import DEFAULT_SCHEMA, CompiledFilters, FilterSchema
from ynet_db.search.index_links import HALFVEC, VECTOR
from ynet_db.search.model_index import serving_index_sql

Path_ = Literal["ann", "exact"]


class SearchError(RuntimeError):
    """A search that cannot be answered as asked (no active model, the wrong model); says why."""


ActiveModel = ModelRecord
"""Search's name for the registry's record of the model that serves."""


class NoActiveModel(SearchError):
    """No model serves yet: a state of the deployment, not a fault of the query (HTTP answers 503)."""


def active_model(conn: Connection) -> ModelRecord:
    """The registry's active model; its absence is a `NoActiveModel` search error to a searcher."""
    try:
        return registry.active(conn)
    except registry.NoActiveModel as error:
        raise NoActiveModel(str(error)) from error


class IndexedModel(Protocol):
    """What the prefilter needs of a model row: `ActiveModel`, or the ORM's `Model`."""

    @property
    def id(self) -> int: ...

    @property
    def version(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...


# -- stage 1: the SQL prefilter ----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchRow:
    """One product found: the prefilter ranks by distance, the re-rank (`query.py`) ranks again and scores."""

    rank: int
    product_id: int
    external_id: str
    title: str
    category: str
    tags: list[str]
    image_uri: str
    distance: float
    """Cosine distance of the stored vector to the query vector (0 = same direction)."""
    rerank_score: float | None
    """CtxYNet's score (higher is better); None when the candidates were not re-ranked."""
    model_version: str
    """The model whose stored vectors were searched."""


@dataclass(frozen=True)
class Prefilter:
    fetched: Sequence[Any]
    """The candidates as the database returned them, nearest first: `row` makes a `SearchRow` of those a
    caller keeps (a search keeps k of 256)."""
    model_version: str
    vectors: np.ndarray | None
    """float32 [N, D] stored vectors of the candidates, in order (when asked for)."""
    path: Path_
    """The statement the policy chose: 'ann' is ordered by the model's HNSW index expression, 'exact' by
    one no index serves. The planner may still answer an 'ann' statement without the HNSW index (e.g. a
    selective filter through the tags index, then a sort): its rows are then exact, and `index_scanned` says so."""
    asked: int
    index_scanned: bool | None = None
    """Whether the HNSW index was scanned (PostgreSQL's per-transaction scan count; None when
    track_counts is off and nobody can tell)."""

    @property
    def short(self) -> bool:
        return self.returned < self.asked

    @property
    def returned(self) -> int:
        return len(self.fetched)

    def row(self, index: int, rank: int, rerank_score: float | None = None) -> SearchRow:
        """The `index`-th candidate as a search result row at `rank`."""
        r = self.fetched[index]
        return SearchRow(
            rank, r.id, r.external_id, r.title, r.category, list(r.tags), r.image_uri, r.distance, rerank_score,
            self.model_version,
        )  # fmt: skip

    @cached_property
    def candidates(self) -> list[SearchRow]:
        """Every candidate as a row, ranked by distance."""
        return [self.row(index, index + 1) for index in range(self.returned)]


def prefilter_statement(
    model: IndexedModel,
    query: np.ndarray,
    where: ColumnElement[bool],
    limit: int,
    *,
    exact: bool,
    with_vectors: bool = False,
    element: str = VECTOR,
) -> Select[Any]:
    """The candidate query. ANN orders by the indexed expression (in the index's `element` type); exact by one
    no index has. The distances are the full vectors' either way.

    With vectors, the ranking runs in a subquery and the outer query encodes only the rows that survive
    its limit: encoded below the sort, every row matching the filter would be (10 ms per 1,000 at 1280-d).
    """
    e, p = Embedding.__table__.c, Product.__table__.c
    order = distance_to(query, model.embedding_dim, indexed=not exact, element=element, name=QUERY)
    full = element == VECTOR or exact  # else the order is a halfvec index's, and the distance computed apart
    distance = order if full else distance_to(query, model.embedding_dim, indexed=False, name=QUERY)
    columns = [p.id, p.external_id, p.title, p.category, p.tags, p.image_uri, distance.label("distance")]
    statement = (
        select(*columns, *([e.embedding.label("stored")] if with_vectors else []))
        .select_from(Embedding.__table__.join(Product.__table__, p.id == e.product_id))
        .where(e.model_id == model_constant(model.id), where)
        .order_by(order)
        .limit(bindparam(LIMIT, limit, Integer))
    )
    if not with_vectors:
        return statement
    ranked = statement.subquery("nearest")
    kept = [column for column in ranked.c if column.name != "stored"]
    return select(*kept, func.vector_send(ranked.c.stored).label("vector"))


QUERY, LIMIT = "query", "limit"
"""The prefilter statement's own parameters. A filter's are SQLAlchemy's anonymous names, which always end
in a number (`category_1`), so the two never meet."""

FILTERS_MARK = "__ynet_filters__"


@lru_cache(maxsize=256)
def statement_template(model_id: int, dim: int, exact: bool, with_vectors: bool, element: str, dialect: Dialect) -> str:
    """The prefilter statement's SQL for one model and path, with `FILTERS_MARK` where the filter goes.

    Only the filter differs from one search to the next, so the rest is built and compiled once:
    building and compiling the whole statement took 2 ms of a 40 ms search."""
    statement = prefilter_statement(
        ActiveModel(model_id, "", dim),
        np.zeros(dim, np.float32),
        literal_column(FILTERS_MARK, Boolean),
        0,
        exact=exact,
        with_vectors=with_vectors,
        element=element,
    )
    return str(statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}))


def prefilter_sql(
    dialect: Dialect,
    model: IndexedModel,
    query: np.ndarray,
    filters: CompiledFilters,
    limit: int,
    *,
    exact: bool,
    with_vectors: bool,
    element: str = VECTOR,
) -> tuple[str, dict[str, Any]]:
    """The prefilter statement as SQL text and parameters for the driver (`prefilter_statement`, compiled)."""
    where = filters.where.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    template = statement_template(model.id, model.embedding_dim, exact, with_vectors, element, dialect)
    sql = template.replace(FILTERS_MARK, f"({where})")
    return sql, {QUERY: vector_text(query), LIMIT: limit, **where.params}


def model_constant(model_id: int) -> ColumnElement[int]:
    """A model id rendered inline. It is an integer from ynet.models, never user text: a partial index
    (WHERE model_id = m) only serves a plan that knows the constant, and a prepared statement's
    generic plan would not."""
    return bindparam("model_id", int(model_id), Integer, literal_execute=True)


def distance_to(
    query: np.ndarray, dim: int, *, indexed: bool = True, element: str = VECTOR, name: str | None = None
) -> ColumnElement[float]:
    """Cosine distance of stored vectors to `query`: in the form the model's HNSW index serves
    (`embedding::vector(dim) <=> q`, both sides `halfvec(dim)` for an index of that `element` type), or, for
    exact search, in a form no index has. `name`: the query's parameter name (anonymous by default, so that
    one statement may hold several distances)."""
    from pgvector.sqlalchemy import HALFVEC as HalfVector
    from pgvector.sqlalchemy import Vector

    as_indexed = HalfVector(dim) if indexed and element == HALFVEC else Vector(dim)
    q = cast(bindparam(name, vector_text(query), String), as_indexed)
    stored = cast(Embedding.__table__.c.embedding, as_indexed) if indexed else Embedding.__table__.c.embedding
    return stored.op("<=>", return_type=Float())(q)


def count_capped(conn: Connection, model: IndexedModel, where: ColumnElement[bool], cap: int) -> int:
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
"""Transaction-scoped settings (SET LOCAL) from two bound arrays: `_settings(...)` binds them."""


def set_local(conn: Connection, settings: Mapping[str, object]) -> None:
    """Transaction-scoped settings (SET LOCAL), in one round trip: gone at commit or rollback, never
    left in the pool."""
    conn.execute(SET_LOCAL, _settings(settings))


def _settings(settings: Mapping[str, object]) -> dict[str, list[str]]:
    return {"names": list(settings), "values": [str(value) for value in settings.values()]}


CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}
"""psycopg prepares a statement run five times on one connection, and PostgreSQL may then switch to a
generic plan that ignores the filter's values: a 10% tag filter at 100,000 products went from 40 ms
to 460 ms on a pooled connection's sixth query. A plan for these values costs well under 1 ms."""


SETTINGS_AND_SERVING_INDEX = text(
    f"SELECT (SELECT count(*) FROM ({SET_LOCAL.text}) AS settings), s.oid, coalesce(s.element, '{VECTOR}'), "
    "CASE WHEN current_setting('track_counts')::boolean THEN pg_stat_get_xact_numscans(s.oid) END "
    f"FROM (SELECT) AS one LEFT JOIN LATERAL ({serving_index_sql('CAST(:model_id AS integer)')}) AS s ON true"
)

INDEX_SCANS = text(
    "SELECT CASE WHEN current_setting('track_counts')::boolean THEN pg_stat_get_xact_numscans(CAST(:oid AS oid)) END"
)


@dataclass(frozen=True)
class ServingIndex:
    """The model's index a search asks (`model_index.serving_index_sql`), as its first statement found it."""

    oid: int | None
    """None: the model has no valid index."""
    element: str
    """The element type to ask in (`vector` when there is no index)."""
    scans: int | None
    """Its scans counted in this transaction so far; None when unknown (no index, or track_counts off)."""

    def scanned(self, conn: Connection) -> bool | None:
        """Whether it was scanned since (PostgreSQL's per-transaction count); None when nobody can tell."""
        if self.oid is None or self.scans is None:
            return None
        after = _count_or_none(conn.execute(INDEX_SCANS, {"oid": self.oid}).scalar_one())
        return None if after is None else after > self.scans


def set_local_and_find_index(conn: Connection, model: IndexedModel, settings: Mapping[str, object]) -> ServingIndex:
    """`set_local`, and the index the search asks with its scans so far, in one round trip (a search's first
    statement)."""
    _, oid, element, scans = conn.execute(
        SETTINGS_AND_SERVING_INDEX, {**_settings(settings), "model_id": model.id}
    ).one()
    return ServingIndex(oid, str(element), _count_or_none(scans))


def _count_or_none(count: int | None) -> int | None:
    return None if count is None else int(count)


def prefilter(
    engine: Engine,
    query: np.ndarray,
    *,
    candidates: int,
    filters: Mapping[str, Any] | CompiledFilters | None = None,
    schema: FilterSchema | None = None,
    exact: bool | None = None,
    with_vectors: bool = False,
    model: ActiveModel | None = None,
) -> Prefilter:
    """The `candidates` nearest embedded products of the active model that pass the filters, in a
    transaction of its own. `filters`: a filter (see `filters.py`, compiled here under `schema`), or one
    compiled already. `exact`: None lets the policy decide; True or False forces a path."""
    compiled = (
        filters if isinstance(filters, CompiledFilters) else CompiledFilters.of(filters, schema or DEFAULT_SCHEMA)
    )
    with engine.begin() as conn:
        return nearest(
            conn, model or active_model(conn), query, compiled, candidates, exact=exact, with_vectors=with_vectors
        )


def nearest(
    conn: Connection,
    model: IndexedModel,
    query: np.ndarray,
    filters: CompiledFilters,
    limit: int,
    *,
    exact: bool | None = None,
    with_vectors: bool = False,
) -> Prefilter:
    """The policy's three steps (`policy.py`) in the caller's transaction, which keeps the settings."""
    if query.shape != (model.embedding_dim,):
        raise SearchError(
            f"the query vector has shape {tuple(query.shape)}, model {model.version} stores "
            f"{model.embedding_dim} dimensions"
        )
    serving = set_local_and_find_index(conn, model, CUSTOM_PLANS | policy.ann_settings(limit))
    if exact is None and filters.narrows:
        exact = policy.exact_first(count_matching(conn, filters.where, policy.EXACT_BELOW + 1))
    if not exact:
        sql = prefilter_sql(
            conn.dialect, model, query, filters, limit, exact=False, with_vectors=with_vectors, element=serving.element
        )
        rows = _fetch(conn, *sql)
        scanned = serving.scanned(conn)
        if (
            exact is False
            or len(rows) == limit
            or not policy.exact_again(len(rows), limit, count_capped(conn, model, filters.where, limit))
        ):
            return _prefilter(rows, "ann", limit, model.version, with_vectors, scanned)
    sql = prefilter_sql(conn.dialect, model, query, filters, limit, exact=True, with_vectors=with_vectors)
    return _prefilter(_fetch(conn, *sql), "exact", limit, model.version, with_vectors, False)


def _fetch(conn: Connection, sql: str, params: Mapping[str, Any]) -> list[Any]:
    # Iterative scans return rows in relaxed order; ties broken by id so both paths agree exactly.
    return sorted(fetch_binary(conn, sql, params), key=lambda row: (row.distance, row.id))


def fetch_binary(conn: Connection, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """The rows of `sql` (compiled for the connection's dialect), fetched in PostgreSQL's binary format on
    the caller's connection (and transaction).

    256 candidates with their 1280-d vectors are 1.3 MB: in the text format SQLAlchemy's driver asks for,
    each bytea doubles as hex and is decoded again, and each row's tags pass through the ARRAY type's
    processor. At 20,000 products that took the prefilter's fetch from 19 to 25 ms.

    The bound values go to psycopg as they are, without SQLAlchemy's bind processors: that holds because
    each is a str, a number, a bool or a list of str (the query's text form, the limit, and the values
    `filters.py` checked). A driver error is raised as SQLAlchemy's (`OperationalError` for a lock timeout
    or a lost server), as every other statement's is, and a lost connection is invalidated: the callers
    that fall back to the primary or answer 503 catch SQLAlchemy's errors."""
    from psycopg import Error as DriverError
    from psycopg.rows import namedtuple_row

    driver = conn.connection.driver_connection
    assert driver is not None, "a checked-out connection has its driver connection"
    try:
        with driver.cursor(binary=True, row_factory=namedtuple_row) as cursor:
            cursor.execute(sql, params)
            rows: list[Any] = cursor.fetchall()
    except DriverError as error:
        lost = conn.dialect.is_disconnect(error, driver, None)  # type: ignore[arg-type]  # the DB-API Error
        if lost:
            conn.invalidate(error)
        raise DBAPIError.instance(sql, params, error, DriverError, connection_invalidated=lost) from error
    return rows


def _prefilter(
    rows: Sequence[Any], path: Path_, asked: int, version: str, with_vectors: bool, index_scanned: bool | None
) -> Prefilter:
    vectors = stored_vectors([r.vector for r in rows]) if with_vectors else None
    return Prefilter(rows, version, vectors, path, asked, index_scanned)
