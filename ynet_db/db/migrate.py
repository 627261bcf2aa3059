"""Run the Alembic migrations that ship inside the package (`ynet_db.migrations`)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from ynet_db.db.tables import SCHEMA

VERSION_TABLE = "alembic_version"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("ynet_db.migrations")))
    return config


def _run(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)


@dataclass(frozen=True)
class MigrationStatus:
    current: str | None
    head: str
    pending: list[str]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def status(engine: Engine) -> MigrationStatus:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None, "the package ships at least one migration"
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table_schema": SCHEMA, "version_table": VERSION_TABLE}
        )
        current = context.get_current_revision()
    pending = [rev.revision for rev in script.iterate_revisions(head, current)]
    return MigrationStatus(current, head, list(reversed(pending)))
