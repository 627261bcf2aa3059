"""`ynet-db status`."""

from __future__ import annotations

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.status import catalogue_status


@click.command()
@pass_app
def status(app: App) -> None:
    """Products, embedding jobs by state, coverage per model and recent errors."""
    click.echo(str(catalogue_status(app.migrated_engine)))
