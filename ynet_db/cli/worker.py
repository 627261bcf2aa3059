"""`ynet-db worker`: a Celery worker that embeds catalogue images, with its dispatcher beside it."""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import replace
from datetime import timedelta

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.config import DEVICES, Settings
from ynet_db.ingestion import jobs
from ynet_db.nn.runtime_threads import threads_per_process, usable_cores
from ynet_db.workers.app import DEFAULT_TICK_S

POOLS = ("auto", "prefork", "solo")


def on_gpu(device: str) -> bool:
    """Whether YNET_DEVICE's value puts the encoders on a GPU.

    Deciding must not initialise CUDA in this (parent) process: prefork children would inherit a broken
    context. `torch.cuda.is_available()` only asks the driver, which is safe before a fork.
    """
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def choose_pool(pool: str, device: str, concurrency: int | None) -> tuple[str, int]:
    """CPU: one process per core, one torch thread each. GPU: one process owns the device (solo)."""
    if pool == "auto":
        pool = "solo" if on_gpu(device) else "prefork"
    if pool == "solo":
        return "solo", 1
    return "prefork", concurrency or usable_cores()


def choose_decode_threads(decode_threads: int | None, device: str) -> int:
    """GPU: every core decodes the next batch while the device encodes this one. CPU: 0, decoding inline,
    because the cores are the encoder's (decoding beside it would only take turns with it)."""
    if decode_threads is not None:
        return decode_threads
    return usable_cores() if on_gpu(device) else 0


@click.command()
@click.option(
    "--pool", type=click.Choice(POOLS), default="auto", show_default=True, help="prefork on CPUs, solo on a GPU."
)
@click.option("--concurrency", "-c", type=click.IntRange(min=1), help="Worker processes (prefork); default: CPU cores.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=jobs.DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Images per forward pass.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=jobs.DEFAULT_LEASE.total_seconds(),
    show_default=True,
    help="Seconds a claimed job stays this worker's.",
)
@click.option(
    "--tick",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TICK_S,
    show_default=True,
    help="Seconds between the dispatcher's rounds: return expired leases, switch to a back-filled model, send "
    "tasks for ready jobs (a new job's NOTIFY also sends tasks at once).",
)
@click.option(
    "--dispatcher/--no-dispatcher", default=True, show_default=True, help="Run the dispatcher beside the worker."
)
@click.option(
    "--queues",
    type=click.Choice(["embed", "search"]),
    multiple=True,
    help="What this worker takes (repeatable; default both): `--queues search` keeps one for queries.",
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    help="Where the encoders run (default: YNET_DEVICE); cuda: one process owns the GPU, fp16 (YNET_RUNTIME=auto).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics of this worker, its processes and its dispatcher on this port (default: off).",
)
@click.option(
    "--decode-threads",
    type=click.IntRange(min=0),
    help="Threads that fetch, decode and preprocess the next batch while this one is encoded "
    "(default: the cores on a GPU, 0 on a CPU: decode inline).",
)
@click.option("--loglevel", default="info", show_default=True)
@pass_app
def worker(
    app: App,
    pool: str,
    concurrency: int | None,
    batch_size: int,
    lease: float,
    tick: float,
    dispatcher: bool,
    queues: tuple[str, ...],
    device: str | None,
    metrics_port: int | None,
    decode_threads: int | None,
    loglevel: str,
) -> None:
    """Embed catalogue images as jobs arrive (Ctrl-C once: write what was fetched, hand the rest back, stop)."""
    if metrics_port:
        _start_multiprocess_metrics()
    from ynet_db.workers.app import QUEUES, UnsafeSettings, WorkerOptions, check_settings, make_app
    from ynet_db.workers.dispatcher import DispatchOptions, run_process

    settings = app.settings if device is None else replace(app.settings, device=device)
    _ = app.migrated_engine  # fail early, with advice, on an old schema
    _check_model(settings)
    pool, processes = choose_pool(pool, settings.device, concurrency)
    threads = threads_per_process(processes)
    options = WorkerOptions(
        batch_size=batch_size,
        lease=timedelta(seconds=lease),
        intra_op_threads=threads,
        decode_threads=choose_decode_threads(decode_threads, settings.device),
    )
    celery_app = make_app(settings, options)
    try:
        check_settings(celery_app)
    except UnsafeSettings as error:
        raise click.ClickException(str(error)) from error
    app.close()  # nothing pooled may survive into the forked children
    if metrics_port:
        _serve_metrics(settings, metrics_port)
    helper = None
    if dispatcher:
        # spawn, not fork: the dispatcher starts clean and holds its own LISTEN connection.
        dispatch = DispatchOptions(tick_s=tick, batch_size=batch_size, fanout=processes)
        helper = multiprocessing.get_context("spawn").Process(
            target=run_process, args=(settings, options, dispatch), name="ynet-dispatcher", daemon=True
        )
        helper.start()
    try:
        celery_app.worker_main(
            [
                "worker",
                "--pool",
                pool,
                "--concurrency",
                str(processes),
                "--loglevel",
                loglevel,
                "--hostname",
                f"ynet-{os.getpid()}@%h",
                "--queues",
                ",".join(QUEUES[name] for name in (queues or QUEUES)),
            ]
        )
    except SystemExit:
        if celery_app.ynet_startup_failure.message() is None:
            raise
    finally:
        if helper is not None:
            helper.terminate()
            helper.join(5)
    failure = celery_app.ynet_startup_failure.message()
    if failure is not None:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # Celery sent them to its logger
        raise click.ClickException(failure)


def _start_multiprocess_metrics() -> None:
    """Multiprocess metrics, set up before anything defines a metric (see ynet_db/metrics/exposition.py);
    the directory goes when the command ends, however it ends."""
    from ynet_db.metrics.exposition import MetricsError, start_multiprocess, stop_multiprocess

    try:
        directory = start_multiprocess()
    except MetricsError as error:
        raise click.ClickException(str(error)) from error
    click.get_current_context().call_on_close(lambda: stop_multiprocess(directory))


def _serve_metrics(settings: Settings, port: int) -> None:
    """The parent serves every process's metrics. Its database gauges use an engine without a pool, so no
    connection is held open when the pool forks its children."""
    from sqlalchemy.pool import NullPool

    from ynet_db.db.engine import make_engine
    from ynet_db.db.server import database_url
    from ynet_db.metrics.exposition import MetricsError, registry, serve

    try:
        serve(port, registry(make_engine(database_url(settings), poolclass=NullPool)))
    except MetricsError as error:
        raise click.ClickException(str(error)) from error


def _check_model(settings: Settings) -> None:
    """A checkpoint that cannot be served stops the command before Celery starts (and says "ready")."""
    from ynet_db.models.serving import verify_configured
    from ynet_db.nn.checkpoint import CheckpointError

    try:
        verify_configured(settings)
    except (CheckpointError, OSError) as error:
        raise click.ClickException(f"cannot serve YNET_MODEL: {error}") from error
