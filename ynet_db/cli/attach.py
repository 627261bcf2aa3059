"""`ynet-db attach`: keep ynet's catalogue in step with a table the shop already has."""

from __future__ import annotations

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.ingestion.attach import AttachError, Columns
from ynet_db.ingestion.attach import attach as attach_table
from ynet_db.ingestion.attach import detach as detach_table


@click.command()
@click.argument("table")
@click.option("--id", "id_column", metavar="COL", help="The column that identifies a row (becomes the product id).")
@click.option("--image", "image_column", metavar="COL", help="The image's path or URL.")
@click.option("--category", "category_column", metavar="COL", help="The product category.")
@click.option("--tags", "tags_column", metavar="COL", help="Tags: text[], or text delimited by , | or ;.")
@click.option("--title", "title_column", metavar="COL", help="The product title.")
@click.option("--detach", is_flag=True, help="Remove the triggers instead (products already copied stay).")
@pass_app
def attach(
    app: App,
    table: str,
    id_column: str | None,
    image_column: str | None,
    category_column: str | None,
    tags_column: str | None,
    title_column: str | None,
    detach: bool,
) -> None:
    """Install triggers on TABLE that keep ynet's catalogue in step with it, and back-fill its rows."""
    try:
        if detach:
            click.echo(f"{detach_table(app.migrated_engine, table)}: detached")
            return
        missing = [
            f"--{name}"
            for name, value in (("id", id_column), ("image", image_column), ("category", category_column))
            if not value
        ]
        if missing:
            raise click.UsageError(f"attaching needs {', '.join(missing)}")
        columns = Columns(str(id_column), str(image_column), str(category_column), tags_column, title_column)
        result = attach_table(app.migrated_engine, table, columns)
    except AttachError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{result.table}: attached, {result.backfilled} products added or updated from its rows")
