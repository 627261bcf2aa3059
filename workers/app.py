"""The Celery app, built from Settings, and the settings that keep work from being lost or doubled.

Celery only carries wake-ups: the jobs themselves live in `ynet.embedding_jobs`, claimed with leases.
Still, the app is configured so a message is not lost while its task runs (late acks, rejected when
the worker process dies, one message prefetched at a time) and is not redelivered to a second worker
while the first still runs it (the broker's visibility timeout exceeds any task's time limit).
`check_settings` refuses combinations that break either promise.

Importing this module imports neither torch nor the tasks: the dispatcher sends tasks by name.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery

from ynet_db.config import Settings
from ynet_db.db.server import database_url
from ynet_db.ingestion import jobs

EMBED_TASK = "ynet.embed_pending"
SEARCH_TASK = "ynet.search_query"
EMBED_QUEUE = "ynet"
SEARCH_QUEUE = "ynet.search"
QUEUES = {"embed": EMBED_QUEUE, "search": SEARCH_QUEUE}
DEFAULT_TICK_S = 10.0
"""Seconds between the dispatcher's rounds. Here, not in the dispatcher, so that the CLI can show it without
importing the dispatcher (and its metrics) before a worker has set up multiprocess metrics."""
# Transports that redeliver an unacknowledged message after a visibility timeout.
VISIBILITY_TRANSPORTS = ("redis", "rediss", "sqs", "sentinel")
REDIS_DEFAULT_VISIBILITY_S = 3600
AMQP_TRANSPORTS = ("amqp", "amqps", "pyamqp")
RABBITMQ_CONSUMER_TIMEOUT_S = 1800
"""RabbitMQ closes the channel of a consumer that holds a message unacknowledged this long (its default)."""


class UnsafeSettings(ValueError):
    """Celery settings that would lose or duplicate work; the message lists each problem."""


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = jobs.DEFAULT_BATCH_SIZE
    lease: timedelta = jobs.DEFAULT_LEASE
    """How long a claimed job stays this worker's; a dead worker's jobs return after it."""
    drain_s: float = 240.0
    """A task claims batches until no work is left or this long has passed, then returns."""
    task_time_limit_s: float = 900.0
    intra_op_threads: int | None = None
    """Intra-op threads per worker process (`runtime_threads.threads_per_process`); None lets torch decide."""
    decode_threads: int = 0
    """Threads that make the next batch ready while this one is encoded (a GPU worker); 0: decode inline."""
    extra_conf: dict[str, object] = field(default_factory=dict)
    """Celery settings applied last (for tests and operators); `check_settings` still applies."""


class StartupFailure:
    """Why a worker process could not start, in memory shared with the process that forked it."""

    SIZE = 2048

    def __init__(self) -> None:
        self._text = multiprocessing.Array(ctypes.c_char, self.SIZE)

    def report(self, message: str) -> None:
        self._text.value = message.encode(errors="replace")[: self.SIZE - 1]

    def message(self) -> str | None:
        return self._text.value.decode(errors="replace") or None


class WorkerApp(Celery):
    """A Celery app that carries the ynet settings its worker processes start from."""

    def __init__(self, settings: Settings, options: WorkerOptions, **kwargs: object) -> None:
        super().__init__("ynet_db", **kwargs)
        self.ynet_settings = settings
        self.ynet_options = options
        # Made before the pool forks, so every child shares them. `ynet_stopping`, set on a warm
        # shutdown, stops a draining task after the fetch in hand (Celery itself only waits for the
        # task to end); `ynet_startup_failure` tells the worker's main process why a child cannot serve.
        self.ynet_stopping = multiprocessing.Event()
        self.ynet_startup_failure = StartupFailure()
        self.ynet_main_pid = os.getpid()


def broker_url(settings: Settings) -> str:
    """YNET_BROKER_URL, or the database itself through Celery's SQLAlchemy transport."""
    if settings.broker_url:
        return settings.broker_url
    return "sqla+" + database_url(settings).render_as_string(hide_password=False)


def make_app(settings: Settings, options: WorkerOptions | None = None) -> WorkerApp:
    options = options or WorkerOptions()
    tasks = ["ynet_db.workers.tasks", "ynet_db.workers.search_tasks"]
    app = WorkerApp(settings, options, broker=broker_url(settings), include=tasks)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=options.task_time_limit_s,
        task_soft_time_limit=options.task_time_limit_s * 0.9,
        # Results live in the jobs table; a result store would only add writes.
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(app, options),
        worker_hijack_root_logger=False,
        task_default_queue=EMBED_QUEUE,
        # Searches have their own queue, so a worker can be kept for them alone (`ynet-db worker
        # --queues search`) and a query never waits behind a catalogue's worth of embedding.
        task_routes={SEARCH_TASK: {"queue": SEARCH_QUEUE}},
    )
    app.conf.update(options.extra_conf)
    return app


def _transport_options(app: Celery, options: WorkerOptions) -> dict[str, object]:
    # Only transports that redeliver after a timeout take one: the SQLAlchemy transport hands its
    # options to create_engine, which rejects unknown keywords.
    if transport(app) in VISIBILITY_TRANSPORTS:
        return {"visibility_timeout": max(REDIS_DEFAULT_VISIBILITY_S, 4 * options.task_time_limit_s)}
    return {}


def transport(app: Celery) -> str:
    url = str(app.conf.broker_url or "")
    return url.split("://", 1)[0].split("+", 1)[0].lower()


def check_settings(app: WorkerApp) -> None:
    """Raise `UnsafeSettings` if the configuration could lose a message or run it twice at once."""
    conf, options = app.conf, app.ynet_options
    problems: list[str] = []
    if not conf.task_acks_late:
        problems.append(
            "task_acks_late is off: a message is acknowledged before its work is done and lost if the worker dies"
        )
    if not conf.task_reject_on_worker_lost:
        problems.append(
            "task_reject_on_worker_lost is off: a task whose process is killed is acknowledged, not redelivered"
        )
    if conf.worker_prefetch_multiplier != 1:
        problems.append(
            f"worker_prefetch_multiplier is {conf.worker_prefetch_multiplier}: messages wait behind a long batch "
            "in one worker's buffer (and are redelivered to a second worker past the visibility timeout)"
        )
    limit = conf.task_time_limit
    if not limit:
        problems.append("task_time_limit is unset: a hung task holds its message forever")
    elif limit <= options.drain_s + options.lease.total_seconds():
        problems.append(
            f"task_time_limit ({limit:g} s) must exceed the drain time plus one lease "
            f"({options.drain_s:g} + {options.lease.total_seconds():g} s), or tasks are killed mid-batch routinely"
        )
    if limit and transport(app) in VISIBILITY_TRANSPORTS:
        visibility = (conf.broker_transport_options or {}).get("visibility_timeout", REDIS_DEFAULT_VISIBILITY_S)
        if visibility <= limit:
            problems.append(
                f"the broker's visibility_timeout ({visibility:g} s) is not above task_time_limit ({limit:g} s): "
                "a running task's message would be delivered to a second worker"
            )
    if limit and transport(app) in AMQP_TRANSPORTS and limit >= RABBITMQ_CONSUMER_TIMEOUT_S:
        problems.append(
            f"task_time_limit ({limit:g} s) reaches RabbitMQ's consumer_timeout ({RABBITMQ_CONSUMER_TIMEOUT_S} s): "
            "the broker would close the channel and redeliver a task that is still running"
        )
    if options.batch_size < 1 or options.lease <= timedelta(0):
        problems.append("batch_size and lease must be positive")
    if problems:
        raise UnsafeSettings("unsafe Celery settings:\n- " + "\n- ".join(problems))
