"""What every sub-command shares: the settings, and one engine for the process, made when first used."""

from __future__ import annotations

from dataclasses import dataclass, field

import click
from sqlalchemy import Engine

from ynet_db.config import Settings, SettingsError
from ynet_db.db.server import DatabaseUnavailable


@dataclass
class App:
    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> App:
        try:
            return cls(Settings.from_env())
        except SettingsError as error:
            raise click.UsageError(str(error)) from error

    @property
    def engine(self) -> Engine:
        """The database engine; starts the embedded server when no YNET_DATABASE_URL is set."""
        if self._engine is None:
            from ynet_db.db.engine import engine_from_settings

            try:
                self._engine = engine_from_settings(self.settings)
            except DatabaseUnavailable as error:
                raise click.ClickException(str(error)) from error
        return self._engine

    @property
    def migrated_engine(self) -> Engine:
        """The engine, after checking that the ynet schema is at the newest revision."""
        from ynet_db.db import migrate

        state = migrate.status(self.engine)
        if not state.up_to_date:
            raise click.ClickException(
                f"the ynet schema is at revision {state.current or 'none'}, this ynet-db needs {state.head}: "
                "run `ynet-db db upgrade` first"
            )
        return self.engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


pass_app = click.make_pass_decorator(App)
