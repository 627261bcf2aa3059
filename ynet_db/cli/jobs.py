"""`ynet-db jobs ...`: the embedding queue's jobs and dead letters."""

from __future__ import annotations

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.db.tables import JOB_STATES
from ynet_db.ingestion import jobs as queue
from ynet_db.ingestion.job_list import JobRow, clipped, list_jobs
from ynet_db.models.registry import RegistryError

JOB_ID = click.IntRange(1, 2**31 - 1)
"""`embedding_jobs.id` is an integer column."""
ERROR_WIDTH = 160


@click.group()
def jobs() -> None:
    """Embedding jobs: list them, re-drive the dead ones."""


@jobs.command("retry")
@click.option(
    "--job", "job_ids", type=JOB_ID, multiple=True, help="A dead job's id (repeatable); default: every dead job."
)
@pass_app
def retry(app: App, job_ids: tuple[int, ...]) -> None:
    """Give dead jobs a fresh set of attempts (after fixing their images)."""
    count = queue.redrive(app.migrated_engine, list(job_ids) or None)
    click.echo(f"{count} dead jobs queued again")
    if job_ids and count < len(job_ids):
        click.echo(f"{len(job_ids) - count} of the named jobs were not dead (or do not exist)", err=True)


@jobs.command("list")
@click.option("--state", type=click.Choice(JOB_STATES), help="Only jobs in this state (e.g. dead).")
@click.option("--model", metavar="NAME_OR_VERSION", help="Only this model's jobs.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="At most this many.")
@click.option("--full", is_flag=True, help=f"Show whole errors (default: the first {ERROR_WIDTH} characters).")
@pass_app
def list_(app: App, state: str | None, model: str | None, limit: int, full: bool) -> None:
    """The most recently changed jobs with their last error, newest first; `jobs retry --job ID` re-drives one."""
    try:
        rows = list_jobs(app.migrated_engine, state=state, model=model, limit=limit)
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    if not rows:
        click.echo("no jobs" + (f" in state {state}" if state else "") + (f" for model {model}" if model else ""))
        return
    click.echo(f"{'id':>10}  {'state':<10} {'tries':>5}  {'model':<24} {'product':<24} last error")
    for row in rows:
        click.echo(_line(row, full))


def _line(row: JobRow, full: bool) -> str:
    error = safe(row.last_error or "")
    tries = f"{row.attempts}/{row.max_attempts}"
    return (
        f"{row.id:>10}  {row.state:<10} {tries:>5}  {safe(row.model_version):<24} {safe(row.product):<24} "
        f"{error if full else clipped(error, ERROR_WIDTH)}"
    ).rstrip()
