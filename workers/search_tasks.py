"""The search task: queries in, results out, run by the worker process that holds the model.

The worker runs the same `ynet_db.search.query.run_queries` as an in-process search, so both give the same
results, reading from the same databases (read replicas first, `ynet_db/db/replicas.py`). A message carries
a batch of queries (gathered by the client, `ynet_db.search.client`): the worker encodes them in one
forward pass. Errors a caller can fix come back as data, by name.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from ynet_db.workers import process
from ynet_db.workers.app import SEARCH_TASK

from ynet_db.search.client import search_backend
from ynet_db.search.filters import FilterError
from ynet_db.search.prefilter import SearchError
from ynet_db.search.query import SearchQuery, run_queries


class SearchTask(Task):
    """A task with its own result store: the app's embedding tasks ignore results and have none."""

    ignore_result = False
    _search_backend: Any = None

    @property
    def backend(self) -> Any:
        if self._search_backend is None:
            self._search_backend = search_backend(self._get_app())
        return self._search_backend

    @backend.setter
    def backend(self, value: Any) -> None:
        self._search_backend = value


@shared_task(name=SEARCH_TASK, base=SearchTask, time_limit=120, soft_time_limit=100)
def search_query(queries: list[dict[str, Any]]) -> dict[str, Any]:
    """Run a batch of queries with the active model (loaded on demand); errors come back as data, by name."""
    resources = process.current()
    try:
        wanted = [SearchQuery.from_wire(q) for q in queries]
        results = run_queries(resources.searches, lambda active: resources.model_for(active.id), wanted)
    except (FilterError, SearchError, LookupError, ValueError) as error:
        return {"error": type(error).__name__, "message": str(error)}
    return {"results": [result.to_wire() for result in results]}
