"""`ynet-db demo`: the main job."""

from __future__ import annotations

from dataclasses import replace

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.db import migrate
from ynet_db.db.server import libpq_dsn
from ynet_db.presentation.demo import DEMO_MODELS, DemoConfig, demo_dataset, import_demo_catalogue
from ynet_db.presentation.status import catalogue_status


@click.command()
@click.option("--products", default=DemoConfig.products, show_default=True, help="Catalogue size.")
@click.option("--queries", type=int, help="Street photos to search (default: one per product).")
@click.option(
    "--model",
    "which",
    type=click.Choice(list(DEMO_MODELS)),
    default="pairs",
    show_default=True,
    help="pairs: trained on street-to-shop pairs; catalogue: trained from a catalogue alone (no street photo); "
    "default: the pretrained default path, no training. YNET_MODEL, when set, wins.",
)
@pass_app
def demo(app: App, products: int, queries: int | None, which: str) -> None:
    """Run the end-to-end demo on this machine, with no settings.

    Starts the embedded PostgreSQL (or uses YNET_DATABASE_URL), migrates it, draws a catalogue of
    generated products into the data directory, imports it so that the triggers record the
    embedding work, starts real worker processes that embed it, searches the street photos through
    the database, and prints top-k accuracy and latency; the HTML report shows queries with their
    results, attention maps, the top-k curve and a latency histogram. A second run reuses what the
    first built. Run it with each --model to compare them on the same catalogue and photos: a
    shop without street photos gets `catalogue` or `default`.
    """
    from ynet_db.cli.checkpoints import load_configured_model
    from ynet_db.models.registry import ModelIdentity, activate, register
    from ynet_db.presentation import demo as steps

    config = DemoConfig(products=products, queries=queries)
    # The demo serves the shipped checkpoint --model names unless YNET_MODEL names another.
    settings = replace(app.settings, model_path=app.settings.model_path or steps.demo_model(which))
    engine = app.engine
    click.echo(f"database: {libpq_dsn(engine.url)}")
    migrate.upgrade(engine)
    dataset = demo_dataset(app.settings.data_dir, config)
    click.echo(f"catalogue: {len(dataset.products)} generated products in {dataset.root}")
    model = load_configured_model(settings)
    register(engine, ModelIdentity.of(model, settings.model_path))
    activate(engine, model.version)
    click.echo(f"model: {model.version} ({model.embedding_dim}-d)")
    click.echo(str(import_demo_catalogue(engine, dataset)))
    log = app.settings.data_dir / "demo" / "worker.log"
    with steps.running_workers(log, settings.model_path, dataset.root) as worker:
        # The worker's dispatcher switches search to the model once it covers the catalogue.
        steps.wait_until_serving(engine, model.version, worker, log)
    click.echo(str(catalogue_status(engine)))
    outcomes = steps.run_queries(engine, model, dataset, config.queries)
    summary, page = steps.write_report(engine, model, dataset, outcomes, app.settings.data_dir / "demo" / "report")
    click.echo(summary)
    click.echo(f"report: {page}")
