"""Thin tasks: ids in, package functions do the work, counts out.

A task never carries a job's data: the jobs table is the truth, and a task only says "there is work".
Delivering it twice, or to a worker whose model has no work, costs one empty claim.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from ynet_db.workers import process
from ynet_db.workers.app import EMBED_TASK, SWEEP_TASK

from ynet_db import jobs
from ynet_db.embed import BatchResult, BatchWriter, run_once
from ynet_db.model_registry import promote_if_complete

log = logging.getLogger(__name__)


@shared_task(name=EMBED_TASK)
def embed_pending(model_id: int | None = None) -> int:
    """Embed ready jobs of one model (default: this process's own) until none is left, the drain time is
    up or the worker stops. Another registered model is loaded on demand: that is how running workers
    back-fill a newly activated model."""
    resources = process.current()
    model_id = resources.record.id if model_id is None else model_id
    try:
        model = resources.model_for(model_id)
    except LookupError as error:
        log.warning("cannot embed for model %s here: %s", model_id, error)
        return 0
    app = embed_pending.app
    options = app.ynet_options
    batches: list[BatchResult] = []
    deadline = time.monotonic() + options.drain_s
    with BatchWriter(resources.engine, resources.name, on_written=resources.heartbeat.add_done) as writer:
        while time.monotonic() < deadline and not app.ynet_stopping.is_set():
            batch = run_once(
                resources.engine,
                model,
                resources.name,
                options.batch_size,
                model_id=model_id,
                lease=options.lease,
                writer=writer,
            )
            if not batch.claimed:
                break
            batches.append(batch)
    total = BatchResult()
    for batch in batches:  # counted once the writer has finished every batch's write
        total.add(batch)
    log.info("embedded %d, %d to retry, %d dead, %d stale", total.done, total.retry, total.dead, total.stale)
    return total.done


@shared_task(name=SWEEP_TASK)
def sweep() -> int:
    """Return expired leases to the queue and switch to a back-filled model when it is complete."""
    engine = process.current().engine
    returned = jobs.sweep(engine)
    promote_if_complete(engine)
    return returned
