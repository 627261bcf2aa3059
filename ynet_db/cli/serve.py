"""`ynet-db serve`: the HTTP API (search by photo, similar products, health, status, metrics) under uvicorn."""

from __future__ import annotations

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe

VIA = ("process", "worker")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--via",
    type=click.Choice(VIA),
    default="process",
    show_default=True,
    help="Run the query model in this process, or hand queries to search workers (`ynet-db worker --queues search`).",
)
@click.option(
    "--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True, help="uvicorn's log level."
)
@pass_app
def serve(app: App, host: str, port: int, via: str, log_level: str) -> None:
    """Serve the HTTP API: POST /search, GET /products/{id}/similar, /health, /status, /metrics (docs at /docs)."""
    import uvicorn

    from ynet_db.service import Service, create_app
    from ynet_db.service.runners import ActiveModelRunner

    if via == "worker" and not app.settings.broker_url:
        click.echo("note: no YNET_BROKER_URL: queries reach the workers through the database", err=True)
    service = Service.create(app.settings, app.migrated_engine, via)
    if isinstance(service.runner, ActiveModelRunner):
        _preload(service.runner)
    where = "this process" if via == "process" else "search workers"
    click.echo(f"ynet-db serves on http://{host}:{port} (queries run in {where})")
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, workers=1)


def _preload(runner: object) -> None:
    """The active model, loaded before the first query; a model that cannot be loaded is said, not fatal:
    /health reports it, and activating another model fixes it without a restart."""
    from ynet_db.service.runners import ActiveModelRunner

    assert isinstance(runner, ActiveModelRunner)
    try:
        version = runner.preload()
    except Exception as error:  # a checkpoint missing here, a broken registry entry: /health says the same
        click.echo(f"warning: the active model cannot be loaded: {safe(error)}", err=True)
        return
    if version is None:
        click.echo("warning: no model is active yet; searches answer 503 until one is", err=True)
