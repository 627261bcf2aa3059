"""`ynet-db db ...`: the server and the schema."""

from __future__ import annotations

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.db import migrate, server
from ynet_db.search.model_index import RebuildError, follow_rule


@click.group()
def db() -> None:
    """Start, stop and migrate the database.

    With no YNET_DATABASE_URL, ynet-db uses an embedded PostgreSQL 18 with pgvector in the data
    directory (YNET_DATA_DIR); it keeps running between commands until `ynet-db db stop`.
    """


@db.command()
@pass_app
def start(app: App) -> None:
    """Start the embedded database (or find it running) and print its URL."""
    if app.settings.database_url:
        raise click.UsageError("YNET_DATABASE_URL is set: ynet-db uses that server and starts none of its own.")
    embedded = server.start_embedded(app.settings.data_dir)
    click.echo(f"embedded PostgreSQL running, pid {embedded.pid}")
    click.echo(server.libpq_dsn(embedded.url()))


@db.command()
@pass_app
def stop(app: App) -> None:
    """Stop the embedded database."""
    stopped = server.stop_embedded(app.settings.data_dir)
    click.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@db.command()
@pass_app
def url(app: App) -> None:
    """Print the database URL, e.g. for `psql "$(ynet-db db url)"`."""
    click.echo(server.libpq_dsn(app.engine.url))


@db.command()
@click.argument("revision", default="head")
@click.option(
    "--skip-index-rebuild",
    is_flag=True,
    help="Leave indexes the size rule would build otherwise for `ynet-db index rebuild` (status warns).",
)
@pass_app
def upgrade(app: App, revision: str, skip_index_rebuild: bool) -> None:
    """Migrate the ynet schema up to REVISION (default: the newest).

    At the newest revision, each searched model's HNSW index that the size rule now builds otherwise is then
    rebuilt concurrently (as `ynet-db index rebuild` does): searches and writes go on, served by the old index
    until the new one is built. Revision 0015 indexes catalogues of 300,000 rows or more as halfvec."""
    migrate.upgrade(app.engine, revision)
    state = migrate.status(app.engine)
    click.echo(f"schema at {state.current}")
    if state.up_to_date and not skip_index_rebuild:
        try:
            follow_rule(app.engine, say=lambda line: click.echo(safe(line)))
        except RebuildError as error:
            raise click.ClickException(safe(str(error))) from error


@db.command()
@click.argument("revision")
@pass_app
def downgrade(app: App, revision: str) -> None:
    """Migrate the ynet schema down to REVISION ('base' removes it; the data goes with it)."""
    migrate.downgrade(app.engine, revision)
    click.echo(f"schema at {migrate.status(app.engine).current or 'base (empty)'}")


@db.command()
@pass_app
def status(app: App) -> None:
    """Show the schema revision and whether migrations are pending."""
    state = migrate.status(app.engine)
    click.echo(f"database: {app.engine.url.render_as_string(hide_password=True)}")
    click.echo(f"schema revision: {state.current or 'none'} (newest: {state.head})")
    if state.pending:
        click.echo(f"pending migrations: {', '.join(state.pending)} - run `ynet-db db upgrade`")
