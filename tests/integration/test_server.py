"""Which server ynet-db uses: the embedded one (started safely by concurrent commands), or a URL with pgvector."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from ynet_db.db.server import DatabaseUnavailable, check_pgvector, embedded_running

LOCAL_POSTGRES_WITHOUT_PGVECTOR = "postgresql://postgres@127.0.0.1:5432/postgres"


def _ynet_db(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YNET_")} | {"YNET_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "ynet_db", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_commands_starting_the_embedded_server_at_once_share_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    try:
        starts = [_ynet_db(data_dir, "db", "start") for _ in range(2)]
        outputs = [process.communicate(timeout=120) for process in starts]
        assert [process.returncode for process in starts] == [0, 0], outputs
        server = embedded_running(data_dir)
        assert server is not None
        assert all(f"pid {server.pid}" in out for out, _ in outputs)
        upgrade = _ynet_db(data_dir, "db", "upgrade")
        out, err = upgrade.communicate(timeout=120)
        assert upgrade.returncode == 0, err
        assert f"schema at {_head()}" in out
    finally:
        stop = _ynet_db(data_dir, "db", "stop")
        stop.communicate(timeout=60)
    assert embedded_running(data_dir) is None


def _head() -> str:
    from alembic.script import ScriptDirectory

    from ynet_db.db.migrate import alembic_config

    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def _reachable(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.mark.skipif(not _reachable(LOCAL_POSTGRES_WITHOUT_PGVECTOR), reason="no local PostgreSQL without pgvector")
def test_a_server_without_pgvector_is_refused_with_what_to_do() -> None:
    with pytest.raises(DatabaseUnavailable) as error:
        check_pgvector(make_url(LOCAL_POSTGRES_WITHOUT_PGVECTOR))
    message = str(error.value)
    assert message.startswith("pgvector is not installed on 127.0.0.1:5432/postgres.")
    assert "version 0.8.0 or newer" in message and "CREATE EXTENSION vector" in message


def test_an_unreachable_server_is_named() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL at 127.0.0.1:1/x"):
        check_pgvector(make_url("postgresql+psycopg://nobody@127.0.0.1:1/x"))


def test_a_restart_of_the_embedded_server_applies_settings_read_at_start(tmp_path: Path) -> None:
    from ynet_db.db.server import libpq_dsn, restart_embedded, start_embedded, stop_embedded

    server = start_embedded(tmp_path)
    try:
        with psycopg.connect(libpq_dsn(server.url("postgres")), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_buffers = '160MB'")  # read at start only
            assert conn.execute("SHOW shared_buffers").fetchone() != ("160MB",)
        restarted = restart_embedded(tmp_path)
        assert restarted.pid != server.pid
        with psycopg.connect(libpq_dsn(restarted.url("postgres")), autocommit=True) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone() == ("160MB",)
    finally:
        stop_embedded(tmp_path)
    with pytest.raises(RuntimeError, match="no embedded server is running"):
        restart_embedded(tmp_path)
