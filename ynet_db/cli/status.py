"""`ynet-db status`."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING, TypeVar

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.presentation.status import CatalogueStatus, catalogue_status

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Item = TypeVar("Item", bound="DataclassInstance")


@click.command()
@pass_app
def status(app: App) -> None:
    """Products, embedding jobs by state, coverage per model, each model's HNSW index and recent errors.

    Warns, with the command to run, when a catalogue has outgrown the links its index was built with
    (`ynet-db index rebuild`), when a searched model has no valid index, and when an interrupted rebuild
    left an index behind.
    """
    click.echo(str(_printable(catalogue_status(app.migrated_engine))))


def _printable(report: CatalogueStatus) -> CatalogueStatus:
    """The report with control characters escaped in every text it quotes (ids, model names, errors)."""
    return replace(
        report,
        workers=[_escaped(worker) for worker in report.workers],
        models=[_escaped(model) for model in report.models],
        recent_errors=[_escaped(error) for error in report.recent_errors],
        warnings=[safe(warning) for warning in report.warnings],
    )


def _escaped(item: Item) -> Item:
    texts = {f.name: safe(value) for f in fields(item) if isinstance(value := getattr(item, f.name), str)}
    return replace(item, **texts)
