"""Thin tasks: ids in, package functions do the work, counts out.

A task never carries a job's data: the jobs table is the truth, and a task only says "there is work".
Delivering it twice, or to a worker whose model has no work, costs one empty claim.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from ynet_db.workers import process
from ynet_db.workers.app import EMBED_TASK

from ynet_db.images.policy import FetchPolicy
from ynet_db.ingestion.embed import drain, policy_fetch

log = logging.getLogger(__name__)


@shared_task(name=EMBED_TASK)
def embed_pending(model_id: int | None = None) -> int:
    """Embed ready jobs of one model (default: this process's own) until none is left, the drain time is
    up or the worker stops (which also cuts the fetch in flight). Another registered model is loaded on
    demand: that is how running workers back-fill a newly activated model."""
    resources = process.current()
    model_id = resources.record.id if model_id is None else model_id
    try:
        model = resources.model_for(model_id)
    except LookupError as error:
        log.warning("cannot embed for model %s here: %s", model_id, error)
        return 0
    app = embed_pending.app
    options = app.ynet_options
    with resources.heartbeat.holding() as in_hand:
        total = drain(
            resources.engine,
            model,
            resources.name,
            options.batch_size,
            until=time.monotonic() + options.drain_s,
            stop=app.ynet_stopping,
            in_hand=in_hand,
            model_id=model_id,
            lease=options.lease,
            fetch=policy_fetch(FetchPolicy.from_settings(app.ynet_settings)),  # built once, not per image
            on_written=resources.heartbeat.add_done,
            decode_threads=options.decode_threads,
        )
    log.info(
        "embedded %d, %d to retry, %d dead, %d stale, %d released",
        total.done,
        total.retry,
        total.dead,
        total.stale,
        total.released,
    )
    return total.done
