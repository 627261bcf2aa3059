"""For operators and their monitoring: `GET /health` (200 or 503, saying what is wrong), `GET /status`
(what `ynet-db status` reports, as JSON) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ynet_db.presentation.status import catalogue_status, live_workers
from ynet_db.search.prefilter import active_model
from ynet_db.service.responses import Health, errors
from ynet_db.service.runners import ActiveModelRunner
from ynet_db.service.state import Service, service_of

router = APIRouter()

BROKER_TIMEOUT_S = 3.0
Check = dict[str, Any]


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Something is wrong."}})
def health(request: Request) -> JSONResponse:
    """The database answers, the broker answers (with --via worker), a model is active and can be served."""
    service = service_of(request)
    checks = {"database": _database(service)}
    if checks["database"]["ok"]:
        checks["model"] = _model(service)
    checks["broker"] = _broker(service)
    if service.via == "worker" and checks["database"]["ok"]:
        checks["workers"] = _workers(service)
    ok = all(check["ok"] for check in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


def _check(ok: bool, detail: str) -> Check:
    return {"ok": ok, "detail": detail}


def _database(service: Service) -> Check:
    try:
        with service.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as error:  # whatever the driver raises, the answer is "unreachable", with its words
        return _check(False, f"unreachable: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return _check(True, "answers")


def _model(service: Service) -> Check:
    try:
        with service.engine.connect() as conn:
            active = active_model(conn)
        if isinstance(service.runner, ActiveModelRunner):
            service.runner.model_for(active)  # loaded at start-up; a newly activated model loads here
    except Exception as error:  # no active model, or one this machine cannot load
        return _check(False, str(error))
    return _check(True, f"active model {active.version}")


def _broker(service: Service) -> Check:
    if service.via != "worker":
        return _check(True, "not used (queries run in this process)")
    from kombu import Connection

    from ynet_db.workers.app import broker_url

    connection = Connection(broker_url(service.settings), connect_timeout=BROKER_TIMEOUT_S)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_S)
    except Exception as error:  # kombu raises the transport's own errors
        return _check(False, f"unreachable: {type(error).__name__}: {error}")
    finally:
        connection.release()
    return _check(True, f"answers at {connection.as_uri()}")


def _workers(service: Service) -> Check:
    with Session(service.engine) as session:
        live = len(live_workers(session))
    if not live:
        return _check(False, "no live worker (start one with `ynet-db worker --queues search`)")
    return _check(True, f"{live} live worker processes")


@router.get("/status", responses=errors(503), summary="Products, embedding work and model coverage")
def status(request: Request) -> dict[str, Any]:
    """What `ynet-db status` reports: products, jobs by state, throughput, live workers, coverage with each
    model's index links, recent errors, and warnings (a catalogue that outgrew its index, with the command)."""
    report = catalogue_status(service_of(request).engine)
    plain: dict[str, Any] = _plain(asdict(report))
    return plain | {"throughput": [_throughput(t) for t in report.throughput]}


def _throughput(window: Any) -> dict[str, Any]:
    return {"window_s": window.window.total_seconds(), "jobs_done": window.jobs_done, "per_second": window.per_second}


def _plain(value: Any) -> Any:
    """JSON values: times as ISO 8601, durations in seconds."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text."}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(service_of(request).metrics), media_type=CONTENT_TYPE_LATEST)
