"""What every sub-command shares: the settings and one engine for the process."""

from __future__ import annotations

from functools import cache

import click
from sqlalchemy import Engine

from ynet_db.config import Settings, SettingsError
from ynet_db.db.server import DatabaseUnavailable


@cache
def settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.UsageError(str(error)) from error


@cache
def engine() -> Engine:
    """The database engine; starts the embedded server when no YNET_DATABASE_URL is set."""
    from ynet_db.db.engine import engine_from_settings

    try:
        return engine_from_settings(settings())
    except DatabaseUnavailable as error:
        raise click.ClickException(str(error)) from error
