"""What every route of the HTTP service shares: settings, the engine (the primary), the databases searches
read from (read replicas first, `ynet_db/db/replicas.py`), the query runner, the search and fetch gates,
the fetch policy and the metrics registry. Built once by `ynet-db serve` (or a test) and handed to
`create_app`; routes reach it as `request.app.state.service`."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from starlette.requests import Request

from ynet_db.config import Settings
from ynet_db.db.replicas import SearchDatabases
from ynet_db.images.decode import ImageLimits
from ynet_db.images.policy import FetchPolicy
from ynet_db.metrics.exposition import registry
from ynet_db.search.query import QueryRunner
from ynet_db.service.gate import Gate
from ynet_db.service.runners import VIA, ActiveModelRunner, worker_runner

WORKER_TIMEOUT_S = 30.0
"""How long a query handed to a search worker may take, queueing included, before the answer is 504."""


@dataclass
class Service:
    settings: Settings
    engine: Engine
    searches: SearchDatabases
    """Where searches and similar-product lookups read; health, status and metrics read the primary."""
    via: str
    """'process' (the query model runs here) or 'worker' (search workers run it)."""
    runner: QueryRunner
    gate: Gate
    """Searches running at once."""
    fetch_gate: Gate
    """Query image URLs fetched at once, before their searches take a slot of `gate`."""
    policy: FetchPolicy
    metrics: CollectorRegistry

    @classmethod
    def create(cls, settings: Settings, engine: Engine, via: str = "process") -> Service:
        if via not in VIA:
            raise ValueError(f"via must be one of {', '.join(VIA)}, got {via!r}")
        searches = SearchDatabases.from_settings(settings, engine)
        runner: QueryRunner = (
            ActiveModelRunner(searches, settings) if via == "process" else worker_runner(settings, WORKER_TIMEOUT_S)
        )
        return cls(
            settings=settings,
            engine=engine,
            searches=searches,
            via=via,
            runner=runner,
            gate=Gate.for_searches(settings.max_concurrent_searches, settings.search_wait_s),
            fetch_gate=Gate.for_fetches(settings.max_concurrent_searches, settings.search_wait_s),
            policy=FetchPolicy.from_settings(settings),
            metrics=registry(engine),
        )

    @property
    def image_limits(self) -> ImageLimits:
        """Query images: the decoder's limits, with the upload bound as the byte limit."""
        return ImageLimits(max_bytes=self.settings.max_upload_bytes)


def service_of(request: Request) -> Service:
    found: Service = request.app.state.service
    return found
