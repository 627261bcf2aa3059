"""`POST /search`: a shopper's photo (uploaded, or at a URL) in, the nearest products out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ynet_db.images.decode import ImageError, decode_image
from ynet_db.images.fetch import fetch_image_bytes
from ynet_db.images.uri import validate_image_uri
from ynet_db.search.filters import FilterError
from ynet_db.search.prefilter import NoActiveModel, SearchError, active_model
from ynet_db.search.query import SearchQuery, SearchResult, on_search_database
from ynet_db.service.errors import ApiError
from ynet_db.service.requests import SearchByUrl, SearchInput, read_search
from ynet_db.service.responses import SearchAnswer, errors, search_answer
from ynet_db.service.state import Service, service_of

router = APIRouter()

QUERY_FETCH_TIMEOUT_S = 10.0
"""A query image URL must answer within this (the whole fetch: DNS, connect, body)."""

FORM_SCHEMA = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "The photo (JPEG, PNG, WebP, GIF, BMP, TIFF)."},
        "k": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
        "candidates": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 256},
        "rerank": {"type": "boolean"},
        "filters": {"type": "string", "description": 'A filter as JSON, e.g. {"category": "dress"}.'},
    },
}
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": FORM_SCHEMA},
            "application/json": {"schema": SearchByUrl.model_json_schema()},
        },
    }
}


@router.post(
    "/search",
    response_model=SearchAnswer,
    responses=errors(400, 413, 415, 422, 429, 503, 504),
    openapi_extra=BODY,
    summary="Search the catalogue with a photo",
)
async def search(request: Request) -> dict[str, Any]:
    """Upload the photo as `image` (multipart/form-data), or send `{"url": ...}` (application/json); the URL
    is fetched under the fetch policy. `k`, `candidates`, `rerank` and `filters` as the search API takes them."""
    service = service_of(request)
    query = await read_search(request, service.settings.max_upload_bytes)
    data = await image_bytes(service, query)
    async with service.gate.slot():
        result = await run_in_threadpool(answer, service, query, data)
    return search_answer(result)


async def image_bytes(service: Service, query: SearchInput) -> bytes:
    """The uploaded photo, or the one at the query's URL, fetched under the fetch gate (not a search slot)."""
    if query.image is not None:
        return query.image
    async with service.fetch_gate.slot():
        return await run_in_threadpool(fetch, service, str(query.url))


def answer(service: Service, query: SearchInput, data: bytes) -> SearchResult:
    field = "image" if query.image is not None else "url"
    try:
        picture = decode_image(
            data, source="upload" if field == "image" else str(query.url), limits=service.image_limits
        )
    except ImageError as error:
        raise ApiError(422, str(error), field) from None
    # A worker decodes the bytes itself; in this process the decoded picture is reused.
    image = data if service.via == "worker" else picture
    try:
        if service.via == "worker":  # no message for a query no worker could answer
            on_search_database(service.searches, active_model)
        search_query = SearchQuery(image, query.k, query.filters, query.candidates, query.rerank)
        return service.runner.run([search_query])[0]
    except Exception as error:
        mapped = unavailable(error)
        if mapped is error:
            raise
        raise mapped from error


def fetch(service: Service, url: str) -> bytes:
    """The image at an http(s) URL under the fetch policy; never a local file, whatever the roots allow."""
    try:
        if validate_image_uri(url).is_local:
            raise ApiError(422, "url: only http:// and https:// URLs are fetched", "url")
        return fetch_image_bytes(
            url, policy=service.policy, timeout_s=QUERY_FETCH_TIMEOUT_S, limits=service.image_limits
        )
    except ImageError as error:  # refused by the policy, unreachable, too large, timed out
        raise ApiError(422, str(error), "url") from None


def unavailable(error: Exception) -> Exception:
    """The answer to a query the deployment could not run: a filter the worker refused, no active model,
    the model cannot be loaded here, the database, broker or workers away or late. Anything else is a bug."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import OperationalError as DatabaseError

    if isinstance(error, FilterError):
        return ApiError(422, str(error), "filters")
    if isinstance(error, NoActiveModel | SearchError | LookupError):
        return ApiError(503, str(error))
    if isinstance(error, TimeoutError | CeleryTimeout):
        return ApiError(504, "no search worker answered in time; are search workers running?")
    if isinstance(error, BrokerError):
        return ApiError(503, f"the broker is unreachable ({error})")
    if isinstance(error, DatabaseError):
        return ApiError(503, "the database is unreachable")
    return error
