"""The dispatcher: turns "there is work in the jobs table" into Celery tasks.

It wakes on the queue's NOTIFY channel (`jobs.CHANNEL`, sent by the catalogue trigger at commit) for low
latency, and every `tick_s` regardless, because NOTIFY is lost while nobody listens and a broker can drop
messages. On each tick it also sweeps expired leases (a killed worker's jobs) and promotes a back-filled
model. Sending is idempotent in effect: an extra task finds nothing to claim. Messages expire, so an
outage of the workers does not pile up wake-ups in the broker.

Promotion lives here, on the tick, and nowhere else: it is housekeeping of the whole catalogue, not of
one batch. Its coverage count reads every embedding of the back-filling model, which a dispatcher pays
once every `tick_s` where workers would pay it after every batch of every process; and a back-fill can
end without any batch, when the sweep kills the last job of a product that takes its worker down. A
switch comes at most one tick after the last embedding, which a back-fill that takes minutes to hours
does not notice. The sweep needs no model either, so it runs here too and no task is sent for it: the
workers keep their processes for embedding and search.

Run one per deployment or one beside each worker; several dispatchers only send extra wake-ups.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from celery import Celery
from sqlalchemy import Engine
from ynet_db.workers.app import EMBED_TASK, WorkerOptions, make_app

from ynet_db.config import Settings
from ynet_db.db.engine import engine_from_settings
from ynet_db.db.server import libpq_dsn
from ynet_db.ingestion import jobs
from ynet_db.metrics.definitions import DISPATCH_TASKS_SENT, LEASES_EXPIRED
from ynet_db.models.registry import promote_if_complete

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 2.0
DEFAULT_TICK_S = 10.0


@dataclass(frozen=True)
class DispatchOptions:
    tick_s: float = DEFAULT_TICK_S
    batch_size: int = jobs.DEFAULT_BATCH_SIZE
    fanout: int = 4
    """At most this many tasks per model per wake-up: about the number of worker processes."""


def dispatch(engine: Engine, app: Celery, options: DispatchOptions) -> int:
    """Send enough tasks for the ready jobs of each model; returns how many were sent."""
    ready = jobs.ready_by_model(engine)
    sent = 0
    expires = max(60.0, 6 * options.tick_s)  # a later tick re-sends; a stale wake-up is worthless
    for model_id, count in ready:
        for _ in range(min(options.fanout, math.ceil(count / options.batch_size))):
            app.send_task(EMBED_TASK, kwargs={"model_id": model_id}, expires=expires)
            sent += 1
            DISPATCH_TASKS_SENT.inc()
    return sent


def housekeeping(engine: Engine) -> None:
    """Return expired leases to the queue, then end a back-fill that covers the catalogue."""
    returned = jobs.sweep(engine)
    LEASES_EXPIRED.inc(returned)
    if returned:
        log.info("returned %d jobs with expired leases to the queue", returned)
    promoted = promote_if_complete(engine)
    if promoted is not None:
        log.info("model %s covers the catalogue and is now active", promoted.version)


def run(
    engine: Engine,
    app: Celery,
    options: DispatchOptions,
    stop: threading.Event | None = None,
    on_round: Callable[[], None] | None = None,
) -> None:
    """Listen and dispatch until `stop` is set; survives database and broker outages. `on_round` is called
    each time the loop goes round with the database answering (`ynet-db dispatcher --health-port`)."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            _listen(engine, app, options, stop, on_round or _nothing)
        except (psycopg.OperationalError, OSError) as error:
            log.warning("dispatcher lost the database (%s); reconnecting in %g s", error, RECONNECT_DELAY_S)
            stop.wait(RECONNECT_DELAY_S)


def _nothing() -> None:
    pass


def _listen(
    engine: Engine, app: Celery, options: DispatchOptions, stop: threading.Event, on_round: Callable[[], None]
) -> None:
    with psycopg.connect(libpq_dsn(engine.url), autocommit=True) as conn:
        conn.execute(f"LISTEN {jobs.CHANNEL}")
        next_tick, woken = 0.0, False  # a tick at once: whatever was committed while nobody listened
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                _guarded(housekeeping, engine)
                next_tick = now + options.tick_s
                woken = True
            if woken:
                _guarded(dispatch, engine, app, options)
            on_round()
            # Wait for a notification or the next tick; at most 1 s at a time so `stop` is seen.
            timeout = min(max(next_tick - time.monotonic(), 0.05), 1.0)
            woken = any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
            if woken:  # one dispatch answers every commit so far (a bulk import sends many)
                for _ in conn.notifies(timeout=0.0):
                    pass


def _guarded(step: object, *args: object) -> None:
    """One failed step (broker down, a query error) is logged and retried on the next wake-up."""
    try:
        step(*args)  # type: ignore[operator]
    except psycopg.OperationalError:
        raise
    except Exception as error:
        log.warning("dispatcher step %s failed: %r", getattr(step, "__name__", step), error)


def run_process(settings: Settings, worker_options: WorkerOptions, options: DispatchOptions) -> None:
    """Entry point of the dispatcher's own process (started with `spawn`: nothing inherited)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = engine_from_settings(settings)
    try:
        run(engine, make_app(settings, worker_options), options)
    finally:
        engine.dispose()
