"""`ynet-db dispatcher`: the dispatcher alone, for deployments whose workers run `--no-dispatcher`."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from ynet_db.cli.context import App, pass_app


@click.command()
@click.option(
    "--tick",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between sweeps of expired leases and re-sends of ready work.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="The workers' --batch-size."
)
@click.option(
    "--fanout",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="At most this many tasks per model per wake-up: about the number of worker processes.",
)
@click.option(
    "--health-port",
    type=click.IntRange(1, 65535),
    help="Answer GET /health on this port: 200 while the loop goes round, 503 once it stalls (default: off).",
)
@pass_app
def dispatcher(app: App, tick: float, batch_size: int, fanout: int, health_port: int | None) -> None:
    """Turn embedding work recorded in the database into Celery tasks, until SIGTERM (or Ctrl-C).

    One per deployment is enough; `ynet-db worker` runs one beside itself unless told --no-dispatcher.
    """
    from ynet_db.liveness import Liveness, serve_health
    from ynet_db.workers.app import make_app
    from ynet_db.workers.dispatcher import DispatchOptions, run

    logging.getLogger("ynet_db").setLevel(logging.INFO)
    engine = app.migrated_engine
    # A round waits at most 1 s, plus a sweep and a dispatch: a minute without one is a stuck loop.
    liveness = Liveness(stale_after_s=max(60.0, 3 * tick))
    stop = threading.Event()

    def handle(number: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    health = serve_health(liveness, health_port) if health_port else None
    click.echo("dispatcher sending embedding work to the workers (Ctrl-C to stop)")
    try:
        run(engine, make_app(app.settings), DispatchOptions(tick, batch_size, fanout), stop, liveness.beat)
    finally:
        if health is not None:
            health.shutdown()
    click.echo("dispatcher stopped")
