"""Every error the HTTP service answers is JSON: `{"error": what is wrong, "field": the input at fault}`.

Bad input is a 4xx naming its field (`field` is null only when no single input is at fault: an unknown
route, a busy service); a deployment that cannot answer (no active model, the database or the workers
away) is a 503 or 504 saying why. A 500 means a bug in ynet-db, never bad input: it is logged with its
traceback and answered without one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

LOCATIONS = ("body", "query", "path", "header", "cookie")
"""The first element of a FastAPI validation error's `loc`: where the input was, not its name."""


class ApiError(Exception):
    """An answer other than success: its status, the message and the field at fault (None: no single one)."""

    def __init__(
        self, status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status: int, message: str, field: str | None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=dict(headers or {}))


def field_of(location: Sequence[Any]) -> str | None:
    """`("query", "k")` -> "k"; `("body", "filters", "x")` -> "filters.x"; `("body",)` -> None."""
    parts = [str(part) for part in location]
    if parts and parts[0] in LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or None


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.message, error.field, error.headers)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    field = field_of(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    return error_response(422, f"{field}: {message}" if field else message, field)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    """Routing errors (404 no such route, 405 method), in the same shape as every other error."""
    assert isinstance(error, StarletteHTTPException)
    return error_response(error.status_code, str(error.detail), None, error.headers)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal error (logged by the service)", None)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
