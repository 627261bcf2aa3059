"""What the HTTP service answers, as models: they document the OpenAPI schema and check each answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ynet_db.search.query import SearchResult


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong, in words.")
    field: str | None = Field(description="The input at fault (a form or JSON field, a query or path parameter).")


class SearchRow(BaseModel):
    rank: int
    product_id: int
    external_id: str
    title: str
    category: str
    tags: list[str]
    image_uri: str
    distance: float = Field(description="The prefilter's cosine distance (0: same direction).")
    rerank_score: float | None = Field(description="CtxYNet's score, higher is better; null when not re-ranked.")


class SearchAnswer(BaseModel):
    model_version: str
    path: Literal["ann", "exact"] = Field(description="How the prefilter ran: the HNSW index or an exact scan.")
    short: bool = Field(description="Fewer candidates than asked came back (the filter matches fewer products).")
    candidates_asked: int
    candidates_returned: int
    reranked: bool
    timings_ms: dict[str, float] = Field(description="Milliseconds per stage: encode, prefilter, rerank.")
    rows: list[SearchRow]


def search_answer(result: SearchResult) -> dict[str, Any]:
    rows = [{name: value for name, value in vars(row).items() if name != "model_version"} for row in result.rows]
    return {
        "model_version": result.model_version,
        "path": result.path,
        "short": result.short,
        "candidates_asked": result.candidates_asked,
        "candidates_returned": result.candidates_returned,
        "reranked": result.reranked,
        "timings_ms": result.timings_ms,
        "rows": rows,
    }


class SimilarRow(BaseModel):
    rank: int
    external_id: str
    source: str
    title: str
    category: str
    tags: list[str]
    image_uri: str
    distance: float


class SimilarAnswer(BaseModel):
    external_id: str
    source: str
    model_version: str
    rows: list[SimilarRow]


class Check(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Check] = Field(description="database, broker, model (and workers, with --via worker).")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "The body cannot be read (malformed JSON or multipart).",
        404: "No such product, or no such route.",
        409: "The request names a product ambiguously, or one not embedded yet.",
        413: "The upload or body is over YNET_MAX_UPLOAD_BYTES.",
        415: "The body is neither multipart/form-data nor application/json.",
        422: "A value is out of bounds or unusable; `field` names it.",
        429: "Every search slot stayed busy; see Retry-After.",
        503: "No model is active, or the database, broker or workers are unavailable.",
        504: "No search worker answered in time.",
    }.items()
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route."""
    return {code: ERRORS[code] for code in codes}
