"""`ynet-db demo`: the main job."""

from __future__ import annotations

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.db import migrate
from ynet_db.db.server import libpq_dsn
from ynet_db.demo import DemoConfig, demo_dataset, import_demo_catalogue
from ynet_db.status import catalogue_status


@click.command()
@click.option("--products", default=DemoConfig.products, show_default=True, help="Catalogue size.")
@pass_app
def demo(app: App, products: int) -> None:
    """Run the end-to-end demo on this machine, with no settings.

    Starts the embedded PostgreSQL (or uses YNET_DATABASE_URL), migrates it, draws a catalogue of
    generated products into the data directory, imports it so that the triggers record the
    embedding work, and shows the catalogue's state. A second run reuses what the first built.
    """
    config = DemoConfig(products=products)
    click.echo(f"database: {libpq_dsn(app.engine.url)}")
    migrate.upgrade(app.engine)
    click.echo(f"schema: revision {migrate.status(app.engine).current}")
    dataset = demo_dataset(app.settings.data_dir, config)
    click.echo(f"catalogue: {len(dataset.products)} generated products in {dataset.root}")
    click.echo(str(import_demo_catalogue(app.engine, dataset)))
    click.echo(str(catalogue_status(app.engine)))
