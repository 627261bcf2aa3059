"""`ynet-db jobs ...`: the embedding queue's dead letters."""

from __future__ import annotations

import click

from ynet_db import jobs as queue
from ynet_db.cli.context import App, pass_app


@click.group()
def jobs() -> None:
    """Embedding jobs: re-drive the dead ones."""


@jobs.command("retry")
@click.option(
    "--job", "job_ids", type=int, multiple=True, help="A dead job's id (repeatable); default: every dead job."
)
@pass_app
def retry(app: App, job_ids: tuple[int, ...]) -> None:
    """Give dead jobs a fresh set of attempts (after fixing their images)."""
    count = queue.redrive(app.migrated_engine, list(job_ids) or None)
    click.echo(f"{count} dead jobs queued again")
    if job_ids and count < len(job_ids):
        click.echo(f"{len(job_ids) - count} of the named jobs were not dead (or do not exist)", err=True)
