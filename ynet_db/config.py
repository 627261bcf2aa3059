"""Settings: the only place that reads the environment.

With nothing set, ynet-db runs on one machine: an embedded PostgreSQL 18 with pgvector in the data
directory holds the catalogue and also serves as Celery's broker and result store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

DEVICES = ("auto", "cpu", "cuda")


class SettingsError(ValueError):
    """A setting has a value ynet-db cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    """External PostgreSQL (with pgvector); None means the embedded server in data_dir."""
    broker_url: str | None = None
    """Redis or RabbitMQ for Celery; None means the database itself carries the messages."""
    data_dir: Path = field(default_factory=lambda: platformdirs.user_data_path("ynet-db"))
    device: str = "auto"
    """Where the models run: auto (CUDA when there is one), cpu or cuda."""
    model_path: Path | None = None
    """A checkpoint to serve instead of the shipped default model."""
    test_database_url: str | None = None
    """For the test suite: a server to use instead of an embedded one."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise SettingsError(f"YNET_DEVICE={self.device!r}: expected one of {', '.join(DEVICES)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("YNET_DATABASE_URL") or None,
            broker_url=env.get("YNET_BROKER_URL") or None,
            data_dir=Path(env["YNET_DATA_DIR"]).expanduser() if env.get("YNET_DATA_DIR") else defaults.data_dir,
            device=env.get("YNET_DEVICE", "auto").lower(),
            model_path=Path(env["YNET_MODEL"]).expanduser() if env.get("YNET_MODEL") else None,
            test_database_url=env.get("YNET_TEST_DATABASE_URL") or None,
        )

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"
