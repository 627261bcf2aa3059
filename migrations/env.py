"""Alembic environment: migrates the `ynet` schema of the database ynet-db is configured for.

`ynet-db db upgrade` passes its own connection in `config.attributes["connection"]`; the plain
`alembic` command (from a checkout, see alembic.ini) uses the ynet-db settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from ynet_db.db.tables import SCHEMA, Base

VERSION_TABLE = "alembic_version"


def run_migrations(connection: Connection) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table_schema=SCHEMA,
        version_table=VERSION_TABLE,
        include_schemas=False,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    from ynet_db.config import Settings
    from ynet_db.db.engine import engine_from_settings

    engine = engine_from_settings(Settings.from_env())
    with engine.begin() as conn:
        run_migrations(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("ynet-db migrations run online only: use `ynet-db db upgrade`.")
run_online()
