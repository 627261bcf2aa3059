"""What a search request may carry, read within bounds: an uploaded image or an image URL, k, filters.

    POST /search  multipart/form-data: image=<file>, k=20, candidates=256, rerank=true, filters={"category": "dress"}
    POST /search  application/json:    {"url": "https://...", "k": 20, "filters": {...}}

The body is read at most YNET_MAX_UPLOAD_BYTES (and a little for the form's own headers) before anything
parses it, whatever Content-Length claims. Every value is checked here, each error naming its field,
before a slot, a fetch or the model is spent on the query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from ynet_db.images.uri import MAX_URI_LENGTH
from ynet_db.search.filters import MAX_CANDIDATES, MAX_K, FilterError, compile_filters
from ynet_db.service.errors import ApiError, field_of

DEFAULT_K = 20
DEFAULT_CANDIDATES = 256
FORM_OVERHEAD_BYTES = 64 * 1024
"""Room in a multipart body for the form's boundaries, part headers and small fields beside the image."""
MAX_JSON_BYTES = 1024 * 1024
"""A JSON query carries a URL and filters: the largest filter (1,000 ids of 200 characters) fits."""
FORM_FIELDS = ("image", "k", "candidates", "rerank", "filters")


class SearchByUrl(BaseModel):
    """A search for the image at a URL, fetched under the fetch policy (public hosts unless YNET_ALLOWED_HOSTS)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URI_LENGTH, description="An http:// or https:// image URL.")
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="Products to return.")
    candidates: int = Field(
        DEFAULT_CANDIDATES, ge=1, le=MAX_CANDIDATES, description="Prefilter size (at least k) that re-ranking sees."
    )
    rerank: bool | None = Field(None, description="CtxYNet re-ranking; null: only where measured to help.")
    filters: dict[str, Any] | None = Field(None, description="A filter as the search API takes it (see filters.py).")


@dataclass(frozen=True)
class SearchInput:
    """A checked search request: exactly one of `image` (uploaded bytes) and `url`."""

    k: int
    candidates: int
    rerank: bool | None
    filters: dict[str, Any] | None
    image: bytes | None = None
    url: str | None = None


async def read_search(request: Request, max_upload_bytes: int) -> SearchInput:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        body = await read_body(request, max_upload_bytes + FORM_OVERHEAD_BYTES, "image")
        return await _from_form(request, body, max_upload_bytes)
    if kind == "application/json":
        return _from_json(await read_body(request, MAX_JSON_BYTES, None))
    raise ApiError(
        415, "send the image as multipart/form-data (field 'image') or a URL as application/json", "Content-Type"
    )


async def read_body(request: Request, limit: int, field: str | None) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body declares {declared} bytes, over the limit of {limit}", field)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes", field)
        chunks.append(chunk)
    return b"".join(chunks)


# -- application/json ----------------------------------------------------------------------------------


def _from_json(body: bytes) -> SearchInput:
    data = parse_json(body, None)
    if not isinstance(data, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(data).__name__}", None)
    try:
        query = SearchByUrl.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = field_of(first["loc"]) or None
        raise ApiError(422, f"{field}: {first['msg']}" if field else str(first["msg"]), field) from None
    return checked(query.k, query.candidates, query.rerank, query.filters, url=query.url)


def parse_json(data: bytes | str, field: str | None) -> Any:
    """JSON whose every string can be stored (no lone surrogate) and whose numbers are finite."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeError are ValueErrors
        where = f"{field} is" if field else "the body is"
        raise ApiError(400 if field is None else 422, f"{where} not valid JSON ({error})", field) from None
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


# -- multipart/form-data -----------------------------------------------------------------------------


async def _from_form(request: Request, body: bytes, max_upload_bytes: int) -> SearchInput:
    form = await _parse_form(request, body)
    try:
        return await _form_input(form, max_upload_bytes)
    finally:
        await form.close()  # the upload's spooled file


async def _form_input(form: Any, max_upload_bytes: int) -> SearchInput:
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        raise ApiError(422, f"unknown field {unknown[0]!r}; allowed: {', '.join(FORM_FIELDS)}", unknown[0])
    for name in FORM_FIELDS:
        if len(form.getlist(name)) > 1:
            raise ApiError(422, f"field {name!r} is given more than once", name)
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "image: attach the photo as a file field named 'image'", "image")
    image = await upload.read()
    if len(image) > max_upload_bytes:
        raise ApiError(413, f"image: {len(image)} bytes, over the limit of {max_upload_bytes}", "image")
    return checked(
        _whole_number(form, "k", DEFAULT_K),
        _whole_number(form, "candidates", DEFAULT_CANDIDATES),
        _flag(form, "rerank"),
        _filters(form),
        image=image,
    )


async def _parse_form(request: Request, body: bytes) -> Any:
    sent = False

    async def replay() -> Message:  # the body read above, handed to Starlette's form parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=1, max_fields=len(FORM_FIELDS))
    except Exception as error:  # the parser's own errors: a malformed body, a missing boundary, too many parts
        detail = getattr(error, "detail", None) or str(error) or type(error).__name__
        raise ApiError(400, f"the multipart body cannot be read ({detail})", None) from None


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, f"{name}: expected a text field, got a file", name)
    return value


def _whole_number(form: Any, name: str, default: int) -> int:
    value = _text(form, name)
    if value is None:
        return default
    if not value.strip().isascii() or not value.strip().isdigit():
        raise ApiError(422, f"{name}: expected a whole number, got {value[:40]!r}", name)
    return int(value)


def _flag(form: Any, name: str) -> bool | None:
    value = _text(form, name)
    if value is None or value == "":
        return None
    if value.lower() not in ("true", "false"):
        raise ApiError(422, f"{name}: expected true or false, got {value[:40]!r}", name)
    return value.lower() == "true"


def _filters(form: Any) -> dict[str, Any] | None:
    value = _text(form, "filters")
    if value is None or value == "":
        return None
    return as_filters(parse_json(value, "filters"))


# -- the checks both forms share ---------------------------------------------------------------------


def as_filters(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(
            422, f"filters: expected a JSON object of field to condition, got {type(value).__name__}", "filters"
        )
    return value


def checked(
    k: int,
    candidates: int,
    rerank: bool | None,
    filters: dict[str, Any] | None,
    *,
    image: bytes | None = None,
    url: str | None = None,
) -> SearchInput:
    """The search API's bounds (filters.py), each error naming its field."""
    if not 1 <= k <= MAX_K:
        raise ApiError(422, f"k: must be between 1 and {MAX_K}, got {k}", "k")
    if not 1 <= candidates <= MAX_CANDIDATES:
        raise ApiError(422, f"candidates: must be between 1 and {MAX_CANDIDATES}, got {candidates}", "candidates")
    if candidates < k:
        raise ApiError(422, f"candidates: must be at least k ({k}), got {candidates}", "candidates")
    check_filters(filters)
    return SearchInput(k, candidates, rerank, filters, image=image, url=url)


def check_filters(filters: dict[str, Any] | None) -> None:
    try:
        compile_filters(filters)
    except FilterError as error:
        raise ApiError(422, str(error), "filters") from None
