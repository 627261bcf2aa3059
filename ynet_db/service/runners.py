"""Where the HTTP service's queries run: in this process (`ActiveModelRunner`) or in search workers.

In this process the runner serves the *active* model, whatever it is (as the database a search reads from
sees it: a read replica, else the primary): it loads it from the registry on
first use, and loads the new one when another model is activated (as a search worker does,
`workers/process.py`), so activating a model never needs a restart of the service. One model is held at
a time; concurrent queries share it (the encoders are safe to call from several threads).

`--via worker` hands queries to `workers.search_tasks.CeleryRunner`, which batches concurrent callers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ynet_db.config import Settings
from ynet_db.db.replicas import SearchDatabases
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
        self._lock = threading.Lock()
        self._loaded: tuple[int, RetrievalModel] | None = None

    def model_for(self, active: ActiveModel) -> QueryModel:
        """The active model, loaded once (`LookupError` when this machine cannot load that version)."""
        loaded = self._loaded
        if loaded is not None and loaded[0] == active.id:
            return loaded[1]
        with self._lock:  # one load; the queries that arrive meanwhile wait for it
            if self._loaded is None or self._loaded[0] != active.id:
                from ynet_db.models.serving import load_record

                model = load_record(active, self.settings)
                log.info("serving model %s (id %s), encoders on %s", model.version, active.id, model.runtime)
                self._loaded = (active.id, model)
            return self._loaded[1]

    @property
    def loaded_version(self) -> str | None:
        return None if self._loaded is None else self._loaded[1].version

    def preload(self) -> str | None:
        """Load the active model now (at start-up, so the first query does not wait); None if none is active."""
        try:
            active = on_search_database(self.databases, active_model)
        except NoActiveModel:
            return None
        return self.model_for(active).version

    def run(self, queries: Sequence[SearchQuery]) -> list[SearchResult]:
        return run_queries(self.databases, self.model_for, queries)


def worker_runner(settings: Settings, timeout_s: float) -> QueryRunner:
    """Queries sent to search workers through the broker (YNET_BROKER_URL, or the database)."""
    from ynet_db.workers.app import make_app
    from ynet_db.workers.search_tasks import CeleryRunner

    runner: QueryRunner = CeleryRunner(make_app(settings), timeout_s=timeout_s)
    return runner
