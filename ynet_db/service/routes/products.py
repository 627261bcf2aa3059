"""`GET /products/{external_id}/similar`: the products nearest to a catalogue product (`orm.similar_products`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from ynet_db.db.tables import Product
from ynet_db.orm import (
    AmbiguousProduct,
    NotEmbedded,
    ProductNotFound,
    active_model,
    product_by_external_id,
    similar_products,
)
from ynet_db.search.filters import MAX_K, MAX_STRING, FilterError
from ynet_db.search.prefilter import NoActiveModel
from ynet_db.search.query import on_search_database
from ynet_db.service.errors import ApiError
from ynet_db.service.requests import as_filters, check_filters, parse_json
from ynet_db.service.responses import SimilarAnswer, errors
from ynet_db.service.state import service_of

router = APIRouter()

MAX_EXTERNAL_ID = 1000
"""Characters in an external id: imports allow 200, an attached shop table's ids are text."""
MAX_FILTERS_CHARS = 8192


@router.get(
    "/products/{external_id:path}/similar",
    response_model=SimilarAnswer,
    responses=errors(404, 409, 422, 503),
    summary="Products that look like a catalogue product",
)
def similar(
    request: Request,
    external_id: Annotated[str, Path(min_length=1, max_length=MAX_EXTERNAL_ID, description="The product's id.")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Products to return.")] = 10,
    source: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_STRING, description="'import' or an attached table, where ids repeat."),
    ] = None,
    filters: Annotated[
        str | None, Query(max_length=MAX_FILTERS_CHARS, description='A filter as JSON, e.g. {"in_stock": true}.')
    ] = None,
) -> dict[str, Any]:
    """The k products whose stored vectors (active model) are nearest to this product's, itself excluded."""
    _no_nul("external_id", external_id)
    if source is not None:
        _no_nul("source", source)
    spec = as_filters(parse_json(filters, "filters")) if filters else None
    check_filters(spec)

    def nearest(conn: Connection) -> dict[str, Any]:
        """The product, its neighbours and the model, from one database's view (a read replica, else the primary)."""
        with Session(bind=conn) as session:
            model = active_model(session)
            product = product_by_external_id(session, external_id, source)
            found = similar_products(session, product, k, spec)
            return similar_answer(model.version, product, found)

    try:
        return on_search_database(service_of(request).searches, nearest)
    except NoActiveModel as error:
        raise ApiError(503, str(error)) from None
    except ProductNotFound as error:
        raise ApiError(404, str(error), "source" if source else "external_id") from None
    except AmbiguousProduct as error:
        raise ApiError(409, str(error), "source") from None
    except NotEmbedded as error:
        raise ApiError(409, str(error), "external_id") from None
    except FilterError as error:
        raise ApiError(422, str(error), "filters") from None


def similar_answer(model_version: str, product: Product, found: list[tuple[Product, float]]) -> dict[str, Any]:
    rows = [
        {
            "rank": rank,
            "external_id": other.external_id,
            "source": other.source,
            "title": other.title,
            "category": other.category,
            "tags": list(other.tags),
            "image_uri": other.image_uri,
            "distance": distance,
        }
        for rank, (other, distance) in enumerate(found, 1)
    ]
    return {"external_id": product.external_id, "source": product.source, "model_version": model_version, "rows": rows}


def _no_nul(name: str, value: str) -> None:
    """PostgreSQL text cannot hold NUL: such an id cannot exist, and must not reach the driver."""
    if "\x00" in value:
        raise ApiError(422, f"{name}: may not contain NUL characters", name)
