"""`ynet-db catalog ...`: products in."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.ingestion.catalog import RowError, count_rows, import_catalog, write_rejections

SHOWN_REJECTIONS = 20
EXIT_ROWS_REJECTED = 3


@click.group()
def catalog() -> None:
    """Products in: import from CSV or JSON Lines."""


@catalog.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", default=500, show_default=True, help="Rows per transaction.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every rejected row (line, id, reason) to this CSV file.",
)
@pass_app
def import_(app: App, file: Path, batch_size: int, rejects: Path | None) -> None:
    """Import products from FILE (.csv or .jsonl), idempotent on the product id.

    Fields: id (required, the shop's SKU), category (required), image (required: a path relative to
    FILE, a file:// or an http(s):// URL), title, tags (JSON list; in CSV 'a|b|c' or a JSON array),
    price, stock. Other fields are kept in the product's `extra`.

    The whole file is validated before anything is written. Re-importing updates changed rows only;
    a new image or new tags make embedding work, a new price does not. Bad rows are reported with
    their line number and the rest are imported; the exit status is 3 when any row was rejected, 1
    (nothing written) when the file itself cannot be read: unknown format, a bad or repeated header.
    """
    with tqdm(total=count_rows(file), unit="row", desc="importing", disable=None) as bar:
        try:
            summary = import_catalog(app.migrated_engine, file, batch_size=batch_size, progress=bar.update)
        except RowError as error:
            raise click.ClickException(safe(error)) from error
    click.echo(safe(summary))
    for rejection in summary.rejected[:SHOWN_REJECTIONS]:
        click.echo(f"  rejected {safe(rejection)}", err=True)
    if len(summary.rejected) > SHOWN_REJECTIONS:
        click.echo(f"  ... and {len(summary.rejected) - SHOWN_REJECTIONS} more (see --rejects)", err=True)
    if rejects is not None:
        write_rejections(summary.rejected, rejects)
    if summary.rejected:
        raise SystemExit(EXIT_ROWS_REJECTED)
