"""Gauges read from the database when Prometheus scrapes: jobs by state, products, live workers, the
active model. The database is the truth (design principle 1), so these are never counted in a process:
every exporter reports the same numbers, and a restart loses nothing.

A scrape that cannot reach the database still answers, with `ynet_database_up 0`: an alert on that is
more useful than a failed scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from ynet_db.db.tables import JOB_STATES

log = logging.getLogger(__name__)

SNAPSHOT = text(
    """
    SELECT 'jobs' AS kind, state AS label, NULL AS extra, count(*) AS n FROM ynet.embedding_jobs GROUP BY state
    UNION ALL SELECT 'products', NULL, NULL, count(*) FROM ynet.products
    UNION ALL SELECT 'model', name, version, 1 FROM ynet.models WHERE state = 'active'
    UNION ALL SELECT 'workers', NULL, NULL, count(*) FROM ynet.workers
     WHERE stopped_at IS NULL AND last_seen_at >= now() - CAST(:live_within AS interval)
    """
)
STATEMENT_TIMEOUT_MS = 5000
"""A scrape must not hang on a locked or overloaded database."""


class DatabaseCollector(Collector):
    """Reads one snapshot per scrape through `engine` (in a forking worker's parent: one without a pool)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only: registering must not query the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ynet_database_up", "1 when the last scrape could read the database, else 0.")
        try:
            rows = self._snapshot()
        except Exception as error:  # any failure: the scrape still answers, and says the database is down
            log.warning("metrics: cannot read the database: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(rows)

    def _snapshot(self) -> list[tuple[str, str | None, str | None, int]]:
        from ynet_db.presentation.status import LIVE_WITHIN

        with self.engine.begin() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            live = f"{LIVE_WITHIN.total_seconds()} seconds"
            return [(row[0], row[1], row[2], int(row[3])) for row in conn.execute(SNAPSHOT, {"live_within": live})]


def families(rows: list[tuple[str, str | None, str | None, int]]) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("ynet_jobs", "Embedding jobs by state (the jobs table now).", labels=["state"])
    counts = {label: n for kind, label, _, n in rows if kind == "jobs"}
    for state in JOB_STATES:  # every state, zeros included, so rate() and absent() behave
        jobs.add_metric([state], counts.get(state, 0))
    yield jobs
    products = GaugeMetricFamily("ynet_products", "Products in the catalogue.")
    products.add_metric([], sum(n for kind, _, _, n in rows if kind == "products"))
    yield products
    workers = GaugeMetricFamily("ynet_live_workers", "Worker processes whose heartbeat is recent.")
    workers.add_metric([], sum(n for kind, _, _, n in rows if kind == "workers"))
    yield workers
    model = GaugeMetricFamily(
        "ynet_active_model_info",
        "The model searches use: 1, with its name and version as labels.",
        labels=["name", "version"],
    )
    for kind, name, version, _ in rows:
        if kind == "model":
            model.add_metric([str(name), str(version)], 1)
    yield model
