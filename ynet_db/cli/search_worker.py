"""`ynet-db search-worker`: answers the searches backends ask in SQL (`ynet.search_requests`)."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import replace
from datetime import timedelta
from types import FrameType

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.config import DEVICES
from ynet_db.search.requests.worker import RequestWorkerOptions

DEFAULTS = RequestWorkerOptions()
"""The option defaults are the worker's own."""


@click.command("search-worker")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 64),
    default=DEFAULTS.batch_size,
    show_default=True,
    help="Requests per forward pass.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=DEFAULTS.lease.total_seconds(),
    show_default=True,
    help="Seconds a claimed request stays this worker's; after it, another worker answers it.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=DEFAULTS.poll_s,
    show_default=True,
    help="Seconds between looks at the table when no NOTIFY wakes the worker.",
)
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=DEFAULTS.retention.total_seconds(),
    show_default=True,
    help="Seconds a finished request and its results stay readable before they are deleted.",
)
@click.option(
    "--fetch-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULTS.fetch_timeout_s,
    show_default=True,
    help="Wall-clock deadline in seconds for fetching a request's image_url.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="Intra-op threads of the encoders (default: the CPU cores)."
)
@click.option("--device", type=click.Choice(DEVICES), help="Where the query encoder runs (default: YNET_DEVICE).")
@click.option(
    "--health-port",
    type=click.IntRange(1, 65535),
    help="Answer GET /health on this port: 200 while the loop goes round, 503 once it stalls (default: off).",
)
@pass_app
def search_worker(
    app: App,
    batch_size: int,
    lease: float,
    poll: float,
    retention: float,
    fetch_timeout: float,
    threads: int | None,
    device: str | None,
    health_port: int | None,
) -> None:
    """Answer search requests inserted in SQL until SIGTERM (or Ctrl-C), then hand back what it holds."""
    from ynet_db.liveness import Liveness, serve_health
    from ynet_db.nn.runtime_threads import set_inference_threads, usable_cores
    from ynet_db.search.requests import RegisteredModels, RequestWorker, RequestWorkerOptions

    logging.getLogger("ynet_db").setLevel(logging.INFO)
    settings = app.settings if device is None else replace(app.settings, device=device)
    try:
        options = RequestWorkerOptions(
            batch_size=batch_size,
            lease=timedelta(seconds=lease),
            poll_s=poll,
            retention=timedelta(seconds=retention),
            fetch_timeout_s=fetch_timeout,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    set_inference_threads(threads or usable_cores())  # ONNX Runtime's sessions take them when it serves
    engine = app.migrated_engine
    liveness = Liveness(stale_after_s=lease)
    worker = RequestWorker(engine, settings, RegisteredModels(engine, settings), options, liveness)
    stop = threading.Event()
    _stop_on_signals(stop)
    health = serve_health(liveness, health_port) if health_port else None
    try:
        worker.warm_up()
        click.echo(f"search worker {worker.name} answering ynet.search_requests (Ctrl-C to stop)")
        worker.run(stop)
    finally:
        if health is not None:
            health.shutdown()
    click.echo(f"search worker {worker.name} stopped")


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(number: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
