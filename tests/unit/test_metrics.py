"""The metrics package: multiprocess mode adds up forked processes, the database gauges survive an outage."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from prometheus_client import generate_latest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from ynet_db.metrics.database import DatabaseCollector
from ynet_db.metrics.exposition import MetricsError, registry, start_multiprocess

FORKED = textwrap.dedent(
    """
    import os
    from prometheus_client import generate_latest
    from ynet_db.metrics.exposition import registry, start_multiprocess, stop_multiprocess

    directory = start_multiprocess()
    from ynet_db.metrics.definitions import EMBEDDINGS_WRITTEN, EMBED_STAGE_SECONDS

    EMBEDDINGS_WRITTEN.inc(2)  # the parent
    for n in (3, 4):  # two forked children, as Celery's prefork pool makes them
        pid = os.fork()
        if pid == 0:
            EMBEDDINGS_WRITTEN.inc(n)
            EMBED_STAGE_SECONDS.labels(stage="encode").observe(0.2)
            os._exit(0)
        os.waitpid(pid, 0)
    print(generate_latest(registry(None)).decode())
    stop_multiprocess(directory)
    print("removed" if not directory.exists() else "left behind")
    """
)


def test_multiprocess_mode_adds_up_forked_processes() -> None:
    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "ynet_embeddings_written_total 9.0" in lines
    assert 'ynet_embed_stage_seconds_count{stage="encode"} 2.0' in lines
    assert lines[-1] == "removed"


def test_multiprocess_mode_is_refused_once_metrics_exist() -> None:
    import ynet_db.metrics.definitions  # noqa: F401 (this process has defined them)

    with pytest.raises(MetricsError) as caught:
        start_multiprocess()
    assert str(caught.value) == (
        "the metrics were defined before multiprocess mode was set up: call start_multiprocess first"
    )


def test_an_unreachable_database_is_reported_not_raised() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", poolclass=NullPool)
    text = generate_latest(registry(engine)).decode()
    assert "ynet_database_up 0.0" in text.splitlines()
    assert "ynet_jobs{" not in text
    assert list(DatabaseCollector(engine).describe()) == []
