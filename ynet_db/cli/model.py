"""`ynet-db model ...`: register models, start a back-fill, see coverage."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ynet_db.cli.checkpoints import load_model
from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.models import evidence
from ynet_db.models.registry import (
    UNCHECKED,
    Coverage,
    ModelIdentity,
    RegistryError,
    activate,
    cancel,
    coverage,
    find,
    register,
)

if TYPE_CHECKING:
    from ynet_db.nn.model import RetrievalModel


@click.group()
def model() -> None:
    """Embedding models: register, activate (back-fills, then switches search), cancel a back-fill, list."""


@model.command("register")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--second-input-size",
    type=int,
    help="Register the shipped default model seen at this second input size too (e.g. 320): two input scales, "
    "a new version that needs its own back-fill and costs about 3x the encoder (README, two input scales).",
)
@pass_app
def register_(app: App, path: Path | None, second_input_size: int | None) -> None:
    """Register the checkpoint at PATH (default: YNET_MODEL, else the shipped default model)."""
    if second_input_size is not None:
        loaded = two_scale_default(path, second_input_size)
    else:
        path = path or app.settings.model_path
        loaded = load_model(path)
    record = register(app.migrated_engine, ModelIdentity.of(loaded, path))
    click.echo(safe(f"{record.version} ({record.name}, {record.embedding_dim} dims): {record.state}"))


def two_scale_default(path: Path | None, second_input_size: int) -> RetrievalModel:
    from ynet_db.nn.model import DEFAULT_CONFIG, RetrievalModel

    if path is not None:
        raise click.UsageError("--second-input-size makes a variant of the shipped default model, not of a checkpoint")
    try:
        config = dataclasses.replace(DEFAULT_CONFIG, second_input_size=second_input_size)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--second-input-size") from error
    return RetrievalModel.load_default(config=config)


@model.command("activate")
@click.argument("name_or_version")
@click.option(
    "--expect-active",
    metavar="VERSION|none",
    help="Refuse, changing nothing, unless VERSION (or no model, 'none') is the active model when the switch "
    "starts: for a script that decided from what served when it looked.",
)
@pass_app
def activate_(app: App, name_or_version: str, expect_active: str | None) -> None:
    """Serve NAME_OR_VERSION: at once if no model is active, else after it has embedded the catalogue."""
    expected = UNCHECKED if expect_active is None else None if expect_active == "none" else expect_active
    try:
        result = activate(app.migrated_engine, name_or_version, expected_active=expected)
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
    """Registered models with their state and coverage of the catalogue, and the held-out check that
    activated a catalogue-trained version or kept it back (it changes nothing: a complete back-fill is
    switched to by the workers' dispatcher)."""
    with app.migrated_engine.connect() as conn:
        rows = coverage(conn)
        checks = evidence.summaries(conn)
    if not rows:
        click.echo("no models registered; run `ynet-db model register`")
    for row in rows:
        click.echo(safe(row))
        if row.model.id in checks:  # why a catalogue-trained version serves, or does not
            click.echo(safe(f"    {checks[row.model.id]}"))
    for row in rows:
        if row.dead and row.model.state in SERVING_STATES:
            click.echo(safe(_dead(row)))


SERVING_STATES = ("active", "backfilling")
"""The states whose dead products matter: search, or the switch to come, goes without them."""


def _dead(row: Coverage) -> str:
    """Which products a serving model leaves out, and how to find and re-drive them."""
    return (
        f"{row.model.version}: {row.dead} products have no embedding, their jobs dead: "
        f"`ynet-db jobs list --state dead --model {row.model.version}` shows why, `ynet-db jobs retry` re-drives"
    )


@model.command("calibrate")
@click.argument("name_or_version")
@click.option("--queries", default=300, show_default=True, help="Catalogue photos to make street views of.")
@click.option("--seed", default=0, show_default=True)
@pass_app
def calibrate_(app: App, name_or_version: str, queries: int, seed: int) -> None:
    """Choose the training-free context re-rank's beta for NAME_OR_VERSION on the catalogue's own photos.

    Needs no street photos: augmented views of embedded products' photos are searched as a shopper's
    photo is, and the beta that ranks their products best is stored with the model version. Search
    re-ranks by default only if that beat the first stage by more than a standard error at top-1.
    """
    from ynet_db.models.calibrate import CalibrationRefused, calibrate, load_registered_model, store

    engine = app.migrated_engine
    try:
        with engine.connect() as conn:
            record = find(conn, name_or_version)
        result = calibrate(engine, load_registered_model(engine, record), record, queries=queries, seed=seed)
    except (RegistryError, CalibrationRefused) as error:
        raise click.ClickException(safe(error)) from error
    store(engine, record, result)
    click.echo(
        safe(
            f"{record.version}: beta {result.beta:g} on {result.judged_on}: top-1 {result.top1_plain:.3f} -> "
            f"{result.top1_reranked:.3f} ({result.gain:+.3f} ± {result.gain_standard_error:.3f}), top-20 "
            f"{result.top20_plain:.3f} -> {result.top20_reranked:.3f}; "
            f"search re-ranks: {'yes' if result.helps else 'no'}"
        )
    )
