"""`ynet-db model ...`: register models, start a back-fill, see coverage."""

from __future__ import annotations

from pathlib import Path

import click

from ynet_db.cli.checkpoints import load_model
from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.model_registry import (
    Coverage,
    ModelIdentity,
    RegistryError,
    activate,
    cancel,
    coverage,
    promote_if_complete,
    register,
)


@click.group()
def model() -> None:
    """Embedding models: register, activate (back-fills, then switches search), cancel a back-fill, list."""


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


@model.command("cancel")
@click.argument("name_or_version")
@pass_app
def cancel_(app: App, name_or_version: str) -> None:
    """Stop NAME_OR_VERSION's back-fill; search keeps the active model."""
    try:
        result = cancel(app.migrated_engine, name_or_version)
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{result.model.version}: back-fill cancelled, {result.dropped_jobs} queued jobs dropped")


@model.command("list")
@pass_app
def list_(app: App) -> None:
    """Registered models with their state and coverage of the catalogue."""
    engine = app.migrated_engine
    promoted = promote_if_complete(engine)
    with engine.connect() as conn:
        rows = coverage(conn)
    if promoted is not None:
        click.echo(safe(_promoted(next(row for row in rows if row.model.id == promoted.id))))
    if not rows:
        click.echo("no models registered; run `ynet-db model register`")
    for row in rows:
        click.echo(safe(row))


def _promoted(row: Coverage) -> str:
    """A model switched to with dead jobs says which products it leaves out and how to find them."""
    done = f"{row.model.version} finished its back-fill and is now active"
    if not row.dead:
        return done
    return (
        f"{done}; {row.dead} products have no embedding under it, their jobs dead: "
        f"`ynet-db jobs list --state dead --model {row.model.version}` shows why, `ynet-db jobs retry` re-drives"
    )
