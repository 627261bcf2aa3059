"""Search: a shopper's photo in, ranked products out.

    result = search(engine, "photo.jpg", k=20, filters={"category": "dress"}, model=model)

Two stages, as in the paper:
1. The active model's street branch encodes the query once (its pooled vector and its feature map),
   and the SQL prefilter (`prefilter.py`) returns up to `candidates` nearest products under that model
   only (approximately nearest on the HNSW path): all of them whenever that many embedded products
   pass the filters, unless the caller forces `exact=False`; fewer otherwise, flagged `short`.
2. CtxYNet re-ranks the candidates from their *stored* vectors, by default only when a re-rank was
   measured to help (docs/method.md#when-search-re-ranks: until then it must not change what users
   get). The first k rows are returned: k whenever k embedded products match, as candidates >= k.

The model work can run in a Celery worker through the `via` runner (`ynet_db.search.client`); both
paths call `run_queries`, so they give the same results. A batch reads from one server, in one
transaction: the first read replica that can answer it, else the primary (`ynet_db/db/replicas.py`).
This module imports torch only inside the functions that run the model (`run_queries`), so the client,
which imports the query and result records from here, loads no torch (tests/unit/test_layout.py).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from PIL import Image
from sqlalchemy import Connection, Engine

from ynet_db.db.replicas import SearchDatabases
from ynet_db.images.decode import ImageError
from ynet_db.images.policy import FetchPolicy
from ynet_db.metrics.definitions import observe_search
from ynet_db.nn.calibration import CalibrationError, ContextCalibration
from ynet_db.search.filters import MAX_CANDIDATES, MAX_K, CompiledFilters, FilterError, bounded
from ynet_db.search.prefilter import ActiveModel, Path_, SearchError, SearchRow, active_model, nearest
from ynet_db.search.query_image import SOURCE, ImageInput, QueryImage, as_image, carried, image_bytes

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


class QueryModel(Protocol):
    """What search needs of a model (`ynet_db.nn.model.RetrievalModel` is one)."""

    version: str

    @property
    def rerank_measured_to_help(self) -> bool: ...

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_street(self, pixels: torch.Tensor) -> Any: ...

    def rerank(
        self, street_map: torch.Tensor, candidates: torch.Tensor, calibration: ContextCalibration | None = None
    ) -> torch.Tensor: ...


# -- queries and results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchQuery:
    """One query, validated and its filter compiled once, before any model work; `to_wire` / `from_wire`
    carry it to a worker as JSON (where it is validated and compiled once more, in that process)."""

    image: QueryImage
    k: int = 20
    filters: Mapping[str, Any] | None = None
    candidates: int = 256
    rerank: bool | None = None
    exact: bool | None = None
    compiled: CompiledFilters = field(init=False, repr=False, compare=False)
    """`filters` as the prefilter uses them."""

    def __post_init__(self) -> None:
        if not isinstance(self.image, bytes | Image.Image):
            raise ImageError(SOURCE, f"must be bytes or a PIL image, not {type(self.image).__name__}")
        bounded("k", self.k, MAX_K)
        bounded("candidates", self.candidates, MAX_CANDIDATES)
        if self.candidates < self.k:
            raise FilterError(f"candidates ({self.candidates}) must be at least k ({self.k})")
        object.__setattr__(self, "compiled", CompiledFilters.of(self.filters))

    def to_wire(self) -> dict[str, Any]:
        return {
            "image": base64.b64encode(image_bytes(self.image)).decode("ascii"),
            "k": self.k,
            "filters": dict(self.filters) if self.filters else None,
            "candidates": self.candidates,
            "rerank": self.rerank,
            "exact": self.exact,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SearchQuery:
        try:
            image = base64.b64decode(data["image"], validate=True)
        except ValueError as error:
            raise ValueError(f"the query image in the message is not valid base64 ({error})") from error
        return cls(**{**data, "image": image})


@dataclass(frozen=True)
class SearchResult:
    rows: list[SearchRow]
    model_version: str
    path: Path_
    """The prefilter statement the policy chose: 'ann' (ordered for the HNSW index) or 'exact' (no index
    serves it). The planner may answer an 'ann' statement without the index: `index_scanned` says whether
    it used it (see `ynet_db.search.prefilter.Prefilter`)."""
    short: bool
    """Fewer candidates than asked came back (the filter matches fewer embedded products)."""
    candidates_asked: int
    candidates_returned: int
    reranked: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    index_scanned: bool | None = None
    """The HNSW index was scanned; None when PostgreSQL does not count scans (track_counts off)."""

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SearchResult:
        return cls(**{**data, "rows": [SearchRow(**row) for row in data["rows"]]})


class QueryRunner(Protocol):
    """Runs queries somewhere: in this process (`InProcess`) or in a worker (`ynet_db.search.client.CeleryRunner`)."""

    def run(self, queries: Sequence[SearchQuery]) -> list[SearchResult]: ...


ModelFor = Callable[[ActiveModel], QueryModel]
"""The query model for the model a database says is active: a caller's own model (`run_queries` checks that
it is that one), or the active model, loaded on demand (the HTTP service, the workers)."""


@dataclass
class InProcess:
    databases: Engine | SearchDatabases
    model: QueryModel

    def run(self, queries: Sequence[SearchQuery]) -> list[SearchResult]:
        return run_queries(self.databases, lambda active: self.model, queries)


# -- the query path --------------------------------------------------------------------------------------


def on_search_database(databases: Engine | SearchDatabases, search: Callable[[Connection], T]) -> T:
    """`search` (reads of the active model and its catalogue) on the first search database that can answer it.

    A replica whose view cannot (a `SearchError`: no active model yet, or not the query's model) hands it
    on to the next and finally to the primary, whose errors are the search's (ynet_db/db/replicas.py)."""
    return SearchDatabases.of(databases).read(search, fall_back_on=(SearchError,))


def run_queries(
    databases: Engine | SearchDatabases, model_for: ModelFor, queries: Sequence[SearchQuery]
) -> list[SearchResult]:
    """Read the active model, encode every query with its query model (`model_for`) in one forward pass, then
    prefilter and re-rank each: all on one database, in one transaction (`on_search_database`), so the model
    and the vectors it is compared with always come from the same view of the catalogue."""
    if not queries:
        return []
    results = on_search_database(databases, lambda conn: _run_on(conn, model_for, queries))
    for result in results:  # in whichever process ran the model: the HTTP service or a search worker
        observe_search(result.path, result.reranked, result.short, result.candidates_returned, result.timings_ms)
    return results


def _run_on(conn: Connection, model_for: ModelFor, queries: Sequence[SearchQuery]) -> list[SearchResult]:
    import torch

    active = active_model(conn)
    model = model_for(active)
    if active.version != model.version:
        raise SearchError(
            f"the active model is {active.version}, but the query model is {model.version}: vectors of two "
            "models are never compared; load the active model"
        )
    started = time.perf_counter()
    pixels = torch.stack([model.preprocess(as_image(q.image)) for q in queries])
    street = model.encode_street(pixels)
    encode_ms = 1000 * (time.perf_counter() - started) / len(queries)
    return [
        _answer(conn, model, active, query, street.vectors[i].numpy(), street.maps[i], encode_ms)
        for i, query in enumerate(queries)
    ]


def _answer(
    conn: Connection,
    model: QueryModel,
    active: ActiveModel,
    query: SearchQuery,
    vector: np.ndarray,
    street_map: torch.Tensor,
    encode_ms: float,
) -> SearchResult:
    import torch

    calibration = registry_calibration(active)
    rerank = rerank_helps(model, calibration) if query.rerank is None else query.rerank
    started = time.perf_counter()
    found = nearest(conn, active, vector, query.compiled, query.candidates, exact=query.exact, with_vectors=rerank)
    prefilter_ms = 1000 * (time.perf_counter() - started)
    started = time.perf_counter()
    scores: np.ndarray | None = None
    order = np.arange(found.returned)
    if rerank and found.returned:
        assert found.vectors is not None
        vectors = torch.from_numpy(found.vectors)
        scores = (
            model.rerank(street_map, vectors) if calibration is None else model.rerank(street_map, vectors, calibration)
        ).numpy()
        order = np.argsort(-scores, kind="stable")  # ties keep the prefilter's order
    rerank_ms = 1000 * (time.perf_counter() - started)
    rows = [
        found.row(i, rank, None if scores is None else float(scores[i])) for rank, i in enumerate(order[: query.k], 1)
    ]
    return SearchResult(
        rows=rows,
        model_version=active.version,
        path=found.path,
        short=found.short,
        candidates_asked=query.candidates,
        candidates_returned=found.returned,
        reranked=rerank,
        timings_ms={"encode": encode_ms, "prefilter": prefilter_ms, "rerank": rerank_ms},
        index_scanned=found.index_scanned,
    )


def registry_calibration(active: ActiveModel) -> ContextCalibration | None:
    """The shop's own context calibration of the active model (`ynet-db model calibrate`), if it made one."""
    if active.context_rerank is None:
        return None
    try:
        return ContextCalibration.from_dict(active.context_rerank)
    except CalibrationError as error:
        raise SearchError(
            f"the registry's context calibration of model {active.version} is unreadable ({error}); "
            f"run `ynet-db model calibrate {active.version}` again"
        ) from error


def rerank_helps(model: QueryModel, calibration: ContextCalibration | None) -> bool:
    """The re-rank gate: the shop's own measurement where it made one, else the model's."""
    return model.rerank_measured_to_help if calibration is None else calibration.helps


def search(
    engine: Engine | SearchDatabases,
    image: ImageInput,
    *,
    k: int = 20,
    filters: Mapping[str, Any] | None = None,
    candidates: int = 256,
    rerank: bool | None = None,
    model: QueryModel | None = None,
    via: QueryRunner | None = None,
    exact: bool | None = None,
    policy: FetchPolicy | None = None,
) -> SearchResult:
    """Search the active model's catalogue with a photo (bytes, a path or URL, or a PIL image).

    `engine`: the database, or `SearchDatabases` to read from replicas first (`ynet_db/db/replicas.py`).
    `model`: the loaded active model, for the model work in this process (default: `configured_model()`,
    loaded now: pass a loaded one to reuse it). `via`: a runner that does the model
    work elsewhere, e.g. `ynet_db.search.client.CeleryRunner`; give one or the other, not both.
    `rerank`: None re-ranks only if the model's re-ranker was measured to help. `policy`: where a path
    or URL may lead (default: the environment's settings, see `ynet_db/images/policy.py`).
    """
    query = SearchQuery(carried(image, policy), k, filters, candidates, rerank, exact)
    return search_many_queries(engine, [query], model=model, via=via)[0]


def search_many_queries(
    engine: Engine | SearchDatabases,
    queries: Sequence[SearchQuery],
    *,
    model: QueryModel | None = None,
    via: QueryRunner | None = None,
) -> list[SearchResult]:
    """Several queries as one batch: one forward pass, one message to a worker."""
    if via is not None and model is not None:
        raise ValueError("give `model` (search in this process) or `via` (search in a worker), not both")
    if via is None:
        via = InProcess(engine, model or configured_model())
    return via.run(queries)


def configured_model() -> QueryModel:
    """What an in-process search loads when given no model: the one the workers serve (YNET_MODEL, else the
    shipped default), its encoders on the runtime YNET_RUNTIME chooses, so its query vectors are theirs."""
    from ynet_db.config import Settings
    from ynet_db.models.serving import load_configured

    return load_configured(Settings.from_env())
