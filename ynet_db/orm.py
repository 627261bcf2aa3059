"""ORM helpers: search from a `Product`, and filters and distances usable in ordinary `select()`.

    with Session(engine) as session, session.begin():
        product = product_by_external_id(session, "sku-1")  # source="public.items" for an attached table's row
        for other, distance in similar_products(session, product, k=10, filters={"in_stock": True}):
            ...
        dresses = session.scalars(select(Product).where(matching({"category": "dress"}))).all()

The caller owns the session and its transaction (SQLAlchemy's advice): `similar_products` sets the
search settings with SET LOCAL, which last until that transaction ends and never reach the pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, object_session

from ynet_db.db.tables import Embedding, Model, Product
from ynet_db.search.filters import DEFAULT_SCHEMA, MAX_K, CompiledFilters, FilterSchema, bounded, compile_filters
from ynet_db.search.index_links import VECTOR
from ynet_db.search.model_index import serving_element
from ynet_db.search.prefilter import SearchError, distance_to, model_constant, nearest
from ynet_db.search.prefilter import active_model as active_record

MAX_SOURCES_SHOWN = 10


class ProductNotFound(SearchError):
    """No product has this external id (in the source asked for)."""


class AmbiguousProduct(SearchError):
    """Several sources use this external id: the caller must name one."""


class NotEmbedded(SearchError):
    """The product has no embedding under the active model yet."""


__all__ = [
    "active_model",
    "embedded_count",
    "matching",
    "model_constant",
    "nearest_to",
    "product_by_external_id",
    "product_embedding",
    "similar_products",
]


def matching(filters: Mapping[str, Any] | None, schema: FilterSchema = DEFAULT_SCHEMA) -> ColumnElement[bool]:
    """A filter (see `ynet_db.search.filters`) as a WHERE clause on `Product`; compose it with `&`, `|`, `and_`."""
    return compile_filters(filters, schema)


def active_model(session: Session) -> Model:
    """The registry's active model (`ynet_db.search.prefilter.active_model`) as an ORM object."""
    record = active_record(session.connection())
    model = session.get(Model, record.id)
    if model is None:  # deleted since the record was read, in another transaction
        raise SearchError(f"model {record.version} is no longer registered")
    return model


def product_by_external_id(session: Session, external_id: str, source: str | None = None) -> Product:
    """The product with this external id (from `source`: 'import' or an attached table's name, when given).

    Each source keeps its own ids, so an id several sources use needs its source; the error says which.
    """
    statement = select(Product).where(Product.external_id == external_id).order_by(Product.source)
    if source is not None:
        statement = statement.where(Product.source == source)
    found = session.scalars(statement.limit(MAX_SOURCES_SHOWN)).all()
    if not found:
        raise ProductNotFound(f"no product with external id {external_id!r}" + (f" in {source}" if source else ""))
    if len(found) > 1:
        sources = ", ".join(product.source for product in found)
        raise AmbiguousProduct(
            f"external id {external_id!r} is used by several sources ({sources}): pass source=one of them"
        )
    return found[0]


def product_embedding(session: Session, product: Product, model: Model | None = None) -> np.ndarray | None:
    """The product's stored vector under the active model (or `model`), float32 [D]; None if not embedded yet."""
    model = model or active_model(session)
    row = session.get(Embedding, (product.id, model.id))
    return None if row is None else np.asarray(row.embedding, dtype=np.float32)


def nearest_to(vector: np.ndarray, model: Model) -> ColumnElement[float]:
    """Cosine distance of stored vectors to `vector`, in the form `model`'s HNSW index serves (in the element
    type it stores, read through the session `model` was loaded in: `vector`, or `halfvec` for a large
    catalogue's index, whose order is the half-precision copies').

    Use with `Embedding.model_id == model_constant(model.id)` in the same statement, and order by it.
    """
    session = object_session(model)
    element = VECTOR if session is None else serving_element(session.connection(), model.id)
    return distance_to(vector, model.embedding_dim, element=element)


def similar_products(
    session: Session,
    product: Product,
    k: int = 10,
    filters: Mapping[str, Any] | None = None,
) -> list[tuple[Product, float]]:
    """The k products whose stored vectors (active model) are nearest to this product's, itself excluded,
    by the same policy as every search (`ynet_db.search.policy`: exact search for a filter matching few
    products, and when the index scan comes back short), so they are `ynet.more_like_this`'s rows."""
    bounded("k", k, MAX_K)
    wanted = CompiledFilters.of(filters)
    model = active_model(session)
    vector = product_embedding(session, product, model)
    if vector is None:
        raise NotEmbedded(f"product {product.external_id!r} has no embedding under the active model yet")
    others = CompiledFilters(wanted.where & (Product.id != product.id), wanted.narrows)
    found = nearest(session.connection(), model, vector, others, k).candidates
    ids = [row.product_id for row in found]
    products = {p.id: p for p in session.scalars(select(Product).where(Product.id.in_(ids)))}
    return [(products[row.product_id], row.distance) for row in found]


def embedded_count(session: Session, filters: Mapping[str, Any] | None = None) -> int:
    """Products with an embedding under the active model that pass the filters."""
    model = active_model(session)
    statement = (
        select(func.count())
        .select_from(Product)
        .join(Embedding, Embedding.product_id == Product.id)
        .where(Embedding.model_id == model.id, matching(filters))
    )
    return int(session.scalar(statement) or 0)
