"""Where the metrics are read: a registry per exporter, multiprocess mode for forking workers, and the port.

A Celery prefork worker embeds in forked children, and a parent-only registry would report none of their
work. So `ynet-db worker --metrics-port N` gives the worker a directory of its own (a fresh temporary
one, removed when it stops) before any metric exists: every process (parent, pool children, the spawned
dispatcher) writes its values there as memory-mapped files, and the parent's port adds them up
(prometheus_client's multiprocess mode). Without `--metrics-port` nothing is written or served.

The HTTP service is one process and serves its own registry on `/metrics`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from ynet_db.metrics.database import DatabaseCollector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's own variable: each process reads it when its first value is made."""
DEFINITIONS = "ynet_db.metrics.definitions"


class MetricsError(RuntimeError):
    """Metrics cannot be exported as asked; the message says why."""


def start_multiprocess() -> Path:
    """A fresh directory for this worker's processes, in force before any metric value is made.

    Call it before anything imports `ynet_db.metrics.definitions`; processes forked or spawned afterwards
    inherit it through the environment.
    """
    if DEFINITIONS in sys.modules:
        raise MetricsError(
            "the metrics were defined before multiprocess mode was set up: call start_multiprocess first"
        )
    directory = Path(tempfile.mkdtemp(prefix="ynet-metrics-"))
    os.environ[MULTIPROCESS_DIR] = str(directory)
    if "prometheus_client.values" in sys.modules:  # imported early (by a library): switch it now
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
    return directory


def stop_multiprocess(directory: Path) -> None:
    os.environ.pop(MULTIPROCESS_DIR, None)
    shutil.rmtree(directory, ignore_errors=True)


class _ProcessRegistry(Collector):
    """The metrics this process defined (the default registry), served beside other collectors."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def registry(engine: Engine | None) -> CollectorRegistry:
    """A registry of ynet-db's metrics, and (with `engine`) the gauges read from the database.

    In multiprocess mode it adds up every process's values; otherwise it serves this process's own.
    """
    import ynet_db.metrics.definitions  # noqa: F401 (every metric exists, at zero, from the first scrape)

    collected = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROCESS_DIR)
    if directory:
        MultiProcessCollector(collected, path=directory)
    else:
        collected.register(_ProcessRegistry())
    if engine is not None:
        collected.register(DatabaseCollector(engine))
    return collected


def serve(port: int, registry_: CollectorRegistry, host: str = "0.0.0.0") -> None:
    """Serve `registry_` on http://HOST:PORT/metrics from a daemon thread of this process."""
    try:
        start_http_server(port, addr=host, registry=registry_)
    except OSError as error:
        raise MetricsError(f"cannot serve metrics on {host}:{port}: {error.strerror or error}") from error
