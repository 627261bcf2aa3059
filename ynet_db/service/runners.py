"""Where the HTTP service's queries run: in this process (`ActiveModelRunner`) or in search workers.

In this process the runner serves the *active* model, whatever it is (as the database a search reads from
sees it: a read replica, else the primary): it loads it from the registry on
first use, and loads the new one when another model is activated (as a search worker does,
`workers/process.py`), so activating a model never needs a restart of the service. It holds the models a
switch-over needs (`ynet_db/models/loaded.py`); concurrent queries share them (the encoders are safe to call
from several threads).

`--via worker` hands queries to `ynet_db.search.client.CeleryRunner`, which batches concurrent callers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ynet_db.config import Settings
from ynet_db.db.replicas import SearchDatabases
from ynet_db.models.loaded import LoadedModels
from ynet_db.search.prefilter import ActiveModel, NoActiveModel, active_model
from ynet_db.search.query import QueryModel, QueryRunner, SearchQuery, SearchResult, on_search_database, run_queries

if TYPE_CHECKING:
    from ynet_db.nn.model import RetrievalModel

log = logging.getLogger(__name__)

VIA = ("process", "worker")


class ActiveModelRunner:
    def __init__(self, databases: SearchDatabases, settings: Settings) -> None:
        self.databases = databases
        self.settings = settings
        self.models: LoadedModels[RetrievalModel] = LoadedModels()

    def model_for(self, active: ActiveModel) -> QueryModel:
        """The active model, loaded once (`LookupError` when this machine cannot load that version)."""
        return self.models.get(active.id, lambda: _load(active, self.settings))

    def preload(self) -> str | None:
        """Load the active model now (at start-up, so the first query does not wait); None if none is active."""
        try:
            active = on_search_database(self.databases, active_model)
        except NoActiveModel:
            return None
        return self.model_for(active).version

    def run(self, queries: Sequence[SearchQuery]) -> list[SearchResult]:
        return run_queries(self.databases, self.model_for, queries)


def _load(record: ActiveModel, settings: Settings) -> RetrievalModel:
    from ynet_db.models.serving import load_record

    model = load_record(record, settings)
    log.info("serving model %s (id %s), encoders on %s", model.version, record.id, model.runtime)
    return model


def worker_runner(settings: Settings, timeout_s: float) -> QueryRunner:
    """Queries sent to search workers through the broker (YNET_BROKER_URL, or the database)."""
    from ynet_db.search.client import CeleryRunner
    from ynet_db.workers.app import make_app

    return CeleryRunner(make_app(settings), timeout_s=timeout_s)
