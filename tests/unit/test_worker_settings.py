"""Celery settings that would lose or duplicate work are refused before a worker starts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ynet_db.workers.app import UnsafeSettings, WorkerOptions, check_settings, make_app

from ynet_db.config import Settings

REDIS = Settings(broker_url="redis://127.0.0.1:6379/15", database_url="postgresql://unused/ynet")


def app_with(settings: Settings = REDIS, **conf: object):  # type: ignore[no-untyped-def]
    return make_app(settings, WorkerOptions(extra_conf=conf))


def test_the_shipped_configuration_is_safe() -> None:
    app = app_with()
    check_settings(app)
    assert (app.conf.task_acks_late, app.conf.task_reject_on_worker_lost, app.conf.worker_prefetch_multiplier) == (
        True,
        True,
        1,
    )
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit


def test_the_database_broker_gets_no_visibility_timeout(settings: Settings) -> None:
    # The SQLAlchemy transport passes its options to create_engine, which refuses unknown keywords.
    app = make_app(settings, WorkerOptions())
    assert app.conf.broker_url.startswith("sqla+postgresql+psycopg://")
    assert app.conf.broker_transport_options == {}
    check_settings(app)


@pytest.mark.parametrize(
    ("conf", "problem"),
    [
        ({"task_acks_late": False}, "task_acks_late is off"),
        ({"task_reject_on_worker_lost": False}, "task_reject_on_worker_lost is off"),
        ({"worker_prefetch_multiplier": 4}, "worker_prefetch_multiplier is 4"),
        ({"task_time_limit": None}, "task_time_limit is unset"),
        ({"task_time_limit": 200}, "task_time_limit (200 s) must exceed the drain time plus one lease (240 + 300 s)"),
        (
            {"task_time_limit": 7200, "broker_transport_options": {"visibility_timeout": 3600}},
            "the broker's visibility_timeout (3600 s) is not above task_time_limit (7200 s)",
        ),
    ],
)
def test_unsafe_settings_are_refused(conf: dict[str, object], problem: str) -> None:
    with pytest.raises(UnsafeSettings) as refused:
        check_settings(app_with(**conf))
    assert problem in str(refused.value)


def test_a_time_limit_past_rabbitmqs_consumer_timeout_is_refused() -> None:
    rabbit = Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//", database_url="postgresql://unused/ynet")
    check_settings(make_app(rabbit, WorkerOptions()))
    with pytest.raises(UnsafeSettings, match=r"task_time_limit \(3600 s\) reaches RabbitMQ's consumer_timeout"):
        check_settings(make_app(rabbit, WorkerOptions(extra_conf={"task_time_limit": 3600})))


def test_a_long_time_limit_is_fine_where_no_visibility_timeout_applies() -> None:
    sqla = Settings(broker_url="sqla+postgresql+psycopg://u@h/ynet")
    app = make_app(sqla, WorkerOptions(extra_conf={"task_time_limit": 7200}))
    check_settings(app)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(UnsafeSettings) as refused:
        check_settings(make_app(REDIS, WorkerOptions(lease=timedelta(0), extra_conf={"task_acks_late": False})))
    assert str(refused.value).count("\n- ") == 2


def test_the_queue_defaults_are_the_queue_modules() -> None:
    from ynet_db.workers.dispatcher import DispatchOptions

    from ynet_db.cli.worker import worker
    from ynet_db.ingestion import jobs

    options = {param.name: param.default for param in worker.params}
    assert (WorkerOptions().lease, WorkerOptions().batch_size) == (jobs.DEFAULT_LEASE, jobs.DEFAULT_BATCH_SIZE)
    assert DispatchOptions().batch_size == jobs.DEFAULT_BATCH_SIZE
    assert (options["lease"], options["batch_size"], options["tick"]) == (
        jobs.DEFAULT_LEASE.total_seconds(),
        jobs.DEFAULT_BATCH_SIZE,
        DispatchOptions().tick_s,
    )


def test_every_task_a_worker_registers_is_one_that_is_sent() -> None:
    """The sweep and the promotion run on the dispatcher's tick: no task is registered for them."""
    from ynet_db.workers.app import EMBED_TASK, SEARCH_TASK

    app = app_with()
    app.loader.import_default_modules()
    assert sorted(name for name in app.tasks if name.startswith("ynet.")) == sorted([EMBED_TASK, SEARCH_TASK])
