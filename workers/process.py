"""What one worker process holds: its database engine, its model and its heartbeat, made after the fork.

The prefork pool forks children from a parent that must not hold a CUDA context, a loaded model or a
pooled database connection: sockets shared across a fork corrupt each other's protocol state. So the
parent creates none of them, and each child builds its own in `worker_process_init` (the solo pool
used on GPUs sends the same signal in its only process).

`_current` is the one piece of module state in ynet-db's workers: the resources of *this* process,
set once by the signal handler and read by the tasks. Tasks reach it through `current()`.

Every database connection the process opens names it (`application_name = 'ynet-worker PID'`, the
pid read when the connection is opened), so `pg_stat_activity` shows which process holds which
connection, and a test can prove that none was opened by the parent.

A warm shutdown (SIGTERM, Ctrl-C) is announced in the parent; `app.ynet_stopping`, an event the pool
children inherit, tells a draining task to cut its fetch in flight, finish what it fetched and take
no other batch.

A worker that cannot serve its model must not say "ready" and idle: `ynet-db worker` reads and verifies
the checkpoint in the main process before Celery starts (`ynet_db.models.serving.verify_configured`),
and a child that still fails to start (the network cannot be built from it, the database refuses the
registration) reports why and stops the worker, which exits non-zero with that reason.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import current_app, signals
from sqlalchemy import Engine, event
from ynet_db.workers.heartbeat import Heartbeat, WorkerIdentity

from ynet_db.config import Settings
from ynet_db.db.engine import engine_from_settings
from ynet_db.db.replicas import SearchDatabases
from ynet_db.models.loaded import LoadedModels
from ynet_db.models.registry import ModelIdentity, ModelRecord, register
from ynet_db.models.serving import load_configured, load_registered
from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.runtime_threads import inference_threads, set_inference_threads

log = logging.getLogger(__name__)


@dataclass
class WorkerResources:
    engine: Engine
    model: RetrievalModel
    record: ModelRecord
    name: str
    """Written into `claimed_by`: host and pid, so a lease names the process that holds it."""
    pid: int
    """The process that built the engine and the model."""
    heartbeat: Heartbeat
    searches: SearchDatabases
    """Where search tasks read: the read replicas first, then `engine` (ynet_db/db/replicas.py)."""
    device: str = "cpu"
    settings: Settings = field(default_factory=Settings)
    """What the models are loaded with (device, runtime, the data directory that caches their graphs)."""
    others: LoadedModels[RetrievalModel] = field(default_factory=LoadedModels)
    """Other registered models this process has loaded on demand (a back-fill, a newly active model)."""

    def model_for(self, model_id: int) -> RetrievalModel:
        """The model registered as `model_id`, loaded once from its recorded checkpoint.

        So the workers already running back-fill a newly activated model, and serve searches with it
        once it is active, without a restart. The loaded model must carry the registered version.
        """
        if model_id == self.record.id:
            return self.model
        return self.others.get(model_id, lambda: self._load(model_id))

    def _load(self, model_id: int) -> RetrievalModel:
        model = load_registered(self.engine, model_id, self.settings)
        log.info(
            "worker process %s loaded model %s (id %s), encoders on %s",
            os.getpid(),
            model.version,
            model_id,
            model.runtime,
        )
        return model


_current: WorkerResources | None = None


def current() -> WorkerResources:
    if _current is None or _current.pid != os.getpid():
        raise RuntimeError("this process has no worker resources: it was not started by a ynet-db worker")
    return _current


def start(settings: Settings, intra_op_threads: int | None = None, lease: timedelta | None = None) -> WorkerResources:
    """Build this process's engine and model, and make sure the model is registered."""
    global _current
    _drop_inherited_broker_engines()
    if intra_op_threads:
        set_inference_threads(intra_op_threads)  # ONNX Runtime's sessions take them when it serves
    engine = engine_from_settings(settings)
    event.listen(engine, "do_connect", _name_connection)
    model = load_configured(settings)
    record = register(engine, ModelIdentity.of(model, settings.model_path))
    if record.state not in ("active", "backfilling"):
        log.warning(
            "model %s is %s: no jobs are made for it until `ynet-db model activate %s`",
            record.version,
            record.state,
            record.version,
        )
    pid, host = os.getpid(), socket.gethostname()
    identity = WorkerIdentity(f"{host}/{pid}", host, pid, record.id, str(model.device))
    heartbeat = Heartbeat(engine, identity, lease=lease)
    heartbeat.start()
    searches = SearchDatabases.from_settings(settings, engine)
    _current = WorkerResources(
        engine, model, record, identity.id, pid, heartbeat, searches, str(settings.device), settings
    )
    log.info(
        "worker process %s serves model %s (id %s), encoders on %s with %s threads",
        pid,
        record.version,
        record.id,
        model.runtime,
        inference_threads(),
    )
    return _current


def _name_connection(dialect: object, record: object, cargs: object, cparams: dict[str, object]) -> None:
    cparams["application_name"] = f"ynet-worker {os.getpid()}"


def _drop_inherited_broker_engines() -> None:
    """Kombu's SQLAlchemy transport caches engines per class; a child must not reuse the parent's sockets."""
    try:
        from kombu.transport.sqlalchemy import Channel
    except ImportError:  # the transport needs SQLAlchemy, which is always installed; be safe anyway
        return
    for engine, _session in list(Channel._engines.values()):
        engine.dispose(close=False)


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    app = current_app._get_current_object()
    try:
        start(app.ynet_settings, app.ynet_options.intra_op_threads, app.ynet_options.lease)
    except Exception as error:
        # Celery only logs a failing handler and would serve on with a process that has no model.
        message = f"worker process {os.getpid()} cannot serve: {type(error).__name__}: {error}"
        log.error(message)
        app.ynet_startup_failure.report(message)
        if os.getpid() == app.ynet_main_pid:  # the solo pool, still starting: Celery lets this through
            raise SystemExit(1) from error
        os.kill(app.ynet_main_pid, signal.SIGTERM)  # a warm shutdown of the whole worker


@signals.worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    # Runs in the parent's signal handler: only set the inherited event, nothing that could block.
    current_app._get_current_object().ynet_stopping.set()


@signals.worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    if _current is not None and _current.pid == os.getpid():
        _current.heartbeat.stop()
        _current.engine.dispose()
        _current.searches.dispose()
