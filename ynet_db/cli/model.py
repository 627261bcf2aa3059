"""`ynet-db model ...`: register models, start a back-fill, see coverage."""

from __future__ import annotations

from pathlib import Path

import click

from ynet_db.cli.checkpoints import load_model
from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.model_registry import ModelIdentity, RegistryError, activate, coverage, promote_if_complete, register


@click.group()
def model() -> None:
    """Embedding models: register, activate (back-fills, then switches search), list."""


@model.command("register")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@pass_app
def register_(app: App, path: Path | None) -> None:
    """Register the checkpoint at PATH (default: YNET_MODEL, else the shipped default model)."""
    path = path or app.settings.model_path
    loaded = load_model(path)
    record = register(app.migrated_engine, ModelIdentity.of(loaded, path))
    click.echo(safe(f"{record.version} ({record.name}, {record.embedding_dim} dims): {record.state}"))


@model.command("activate")
@click.argument("name_or_version")
@pass_app
def activate_(app: App, name_or_version: str) -> None:
    """Serve NAME_OR_VERSION: at once if no model is active, else after it has embedded the catalogue."""
    try:
        result = activate(app.migrated_engine, name_or_version)
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{result.model.version}: {result.model.state}, {result.backfill_jobs} products queued")
    if result.model.state == "backfilling":
        click.echo("search keeps the current model until the back-fill covers every product; see `ynet-db model list`")


@model.command("list")
@pass_app
def list_(app: App) -> None:
    """Registered models with their state and coverage of the catalogue."""
    engine = app.migrated_engine
    promoted = promote_if_complete(engine)
    if promoted is not None:
        click.echo(safe(f"{promoted.version} finished its back-fill and is now active"))
    with engine.connect() as conn:
        rows = coverage(conn)
    if not rows:
        click.echo("no models registered; run `ynet-db model register`")
    for row in rows:
        click.echo(safe(row))
