"""Switching models: promotion with dead jobs, products inserted while a back-fill starts, cancelling a back-fill."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from threading import Thread

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from ynet_db.workers.dispatcher import housekeeping

from ynet_db import orm
from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.db.server import libpq_dsn
from ynet_db.ingestion import jobs
from ynet_db.models.registry import (
    Activation,
    ActiveModelChanged,
    ModelIdentity,
    NoActiveModel,
    RegistryError,
    activate,
    active,
    cancel,
    coverage,
    get,
    promote_if_complete,
    register,
    store_calibration,
)
from ynet_db.presentation.demo import wait_until_serving
from ynet_db.search import prefilter
from ynet_db.search.prefilter import SearchError


def identity(version: str) -> ModelIdentity:
    return ModelIdentity("m", version, 2, "0" * 64, {})


def add_product(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO ynet.products (external_id, category, image_uri) VALUES (:n, 'dress', '/img/' || :n)"),
            {"n": name},
        )


def embed(engine: Engine, model_id: int, limit: int = 100) -> int:
    """Claim and complete up to `limit` of the model's jobs, as a worker would; returns how many."""
    claimed = jobs.claim(engine, "w", limit, model_id=model_id)
    return sum(jobs.complete(engine, job, "w", [1.0, 0.0], "a" * 64) for job in claimed)


def kill(engine: Engine, model_id: int) -> None:
    """The model's next job fails for good (an image that cannot be decoded)."""
    (job,) = jobs.claim(engine, "w", 1, model_id=model_id)
    assert jobs.fail(engine, job, "w", "cannot decode\n/img/x", permanent=True) == "dead"


@pytest.fixture
def switching(engine: Engine) -> tuple[int, int]:
    """Model m@1 active with three products embedded; m@2 activated, so back-filling with three jobs."""
    for name in ("a", "b", "c"):
        add_product(engine, name)
    first = activate(engine, register(engine, identity("m@1")).version).model
    assert embed(engine, first.id) == 3
    second = activate(engine, register(engine, identity("m@2")).version)
    assert (second.model.state, second.backfill_jobs) == ("backfilling", 3)
    return first.id, second.model.id


def states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT version, state FROM ynet.models")).all())


def test_a_dead_job_does_not_block_the_switch_and_is_reported(
    engine: Engine, switching: tuple[int, int], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, second = switching
    assert embed(engine, second, limit=2) == 2
    assert promote_if_complete(engine) is None, "one product still queued"
    kill(engine, second)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    listed = CliRunner().invoke(main, ["model", "list"])
    assert listed.exit_code == 0, listed.output
    assert "m@2                              backfilling 2/3 embedded (66.7%), 0 queued, 1 dead" in listed.output
    assert states(engine) == {"m@1": "active", "m@2": "backfilling"}, "a listing switches nothing"
    housekeeping(engine)  # the dispatcher's tick
    assert states(engine) == {"m@1": "retired", "m@2": "active"}
    result = CliRunner().invoke(main, ["model", "list"])
    assert result.exit_code == 0, result.output
    assert "m@2                              active      2/3 embedded (66.7%), 0 queued, 1 dead" in result.output
    assert result.output.splitlines()[-1] == (
        "m@2: 1 products have no embedding, their jobs dead: "
        "`ynet-db jobs list --state dead --model m@2` shows why, `ynet-db jobs retry` re-drives"
    )


def test_a_model_that_embedded_nothing_is_not_switched_to(engine: Engine, switching: tuple[int, int]) -> None:
    _, second = switching
    for _ in range(3):
        kill(engine, second)
    with engine.connect() as conn:
        (row,) = coverage(conn, "backfilling")
    assert (row.embedded, row.dead, row.complete) == (0, 3, False)
    assert promote_if_complete(engine) is None


def test_a_re_driven_dead_job_holds_the_switch_again(engine: Engine, switching: tuple[int, int]) -> None:
    _, second = switching
    embed(engine, second, limit=2)
    kill(engine, second)
    assert jobs.redrive(engine) == 1
    assert promote_if_complete(engine) is None, "the product is queued again, not given up on"
    assert embed(engine, second) == 1
    promoted = promote_if_complete(engine)
    assert promoted is not None and promoted.version == "m@2"


def waiting_on_a_lock(engine: Engine, query: str) -> Callable[[], bool]:
    def check() -> bool:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE :q"
            return bool(conn.execute(text(sql), {"q": query}).scalar_one())

    return check


def wait_for(condition: Callable[[], bool], deadline_s: float = 30.0) -> None:
    """Poll until `condition` holds (a lock wait shows only in pg_stat_activity): not a timed assertion."""
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.01)


def open_jobs(engine: Engine, product: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.version FROM ynet.embedding_jobs j JOIN ynet.models m ON m.id = j.model_id "
                "JOIN ynet.products p ON p.id = j.product_id "
                "WHERE p.external_id = :p AND j.state IN ('pending', 'retry', 'running') ORDER BY 1"
            ),
            {"p": product},
        )
        return list(rows.scalars())


def activate_in_thread(engine: Engine, version: str) -> tuple[Thread, list[Activation]]:
    done: list[Activation] = []
    thread = Thread(target=lambda: done.append(activate(engine, version)))
    thread.start()
    return thread, done


@pytest.fixture
def one_active(engine: Engine) -> None:
    for name in ("a", "b"):
        add_product(engine, name)
    first = activate(engine, register(engine, identity("m@1")).version).model
    assert embed(engine, first.id) == 2
    register(engine, identity("m@2"))


def test_a_product_committed_while_activate_waits_is_back_filled(engine: Engine, one_active: None) -> None:
    with psycopg.connect(libpq_dsn(engine.url)) as shop:
        shop.execute("INSERT INTO ynet.products (external_id, category, image_uri) VALUES ('new', 'dress', '/n')")
        thread, done = activate_in_thread(engine, "m@2")
        wait_for(waiting_on_a_lock(engine, "LOCK TABLE ynet.products%"))
        shop.commit()
    thread.join()
    assert done[0].backfill_jobs == 3
    assert open_jobs(engine, "new") == ["m@1", "m@2"]


def test_a_product_inserted_while_activate_runs_gets_its_job_from_the_trigger(engine: Engine, one_active: None) -> None:
    with psycopg.connect(libpq_dsn(engine.url)) as holder:
        holder.execute("LOCK TABLE ynet.models IN SHARE ROW EXCLUSIVE MODE")  # activate stops between its two locks
        thread, done = activate_in_thread(engine, "m@2")
        wait_for(waiting_on_a_lock(engine, "LOCK TABLE ynet.models%"))
        insert = Thread(target=add_product, args=(engine, "new"))
        insert.start()
        wait_for(waiting_on_a_lock(engine, "INSERT INTO ynet.products%"))
        holder.rollback()
    thread.join()
    insert.join()
    assert done[0].backfill_jobs == 2, "the insert was not committed when the back-fill ran"
    assert open_jobs(engine, "new") == ["m@1", "m@2"]


def test_cancelling_a_back_fill_drops_its_work_and_keeps_search_on_the_active_model(
    engine: Engine, switching: tuple[int, int], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, second = switching
    assert embed(engine, second, limit=1) == 1
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    result = CliRunner().invoke(main, ["model", "cancel", "m@2"])
    assert (result.exit_code, result.output) == (0, "m@2: back-fill cancelled, 2 queued jobs dropped\n")
    assert states(engine) == {"m@1": "active", "m@2": "registered"}
    add_product(engine, "d")
    assert open_jobs(engine, "d") == ["m@1"]
    assert promote_if_complete(engine) is None
    with pytest.raises(RegistryError, match="m@2 is registered, not back-filling: there is nothing to cancel"):
        cancel(engine, "m@2")
    again = activate(engine, "m@2")
    assert (again.model.state, again.backfill_jobs) == ("backfilling", 3), "b, c and d: a was embedded before"


def test_every_caller_asks_the_registry_which_model_serves(engine: Engine, switching: tuple[int, int]) -> None:
    first, _ = switching
    store_calibration(engine, first, {"beta": 2.0})
    with engine.connect() as conn:
        record = active(conn)
        assert prefilter.active_model(conn) == record
    assert (record.id, record.version, record.state, record.embedding_dim) == (first, "m@1", "active", 2)
    assert record.context_rerank == {"beta": 2.0}
    with Session(engine) as session:
        assert orm.active_model(session).version == "m@1"


def test_without_an_active_model_every_caller_says_what_to_do(engine: Engine) -> None:
    register(engine, identity("m@1"))
    message = "no model is active: run `ynet-db model activate NAME` once its embeddings exist"
    with engine.connect() as conn:
        with pytest.raises(NoActiveModel) as registry_error:
            active(conn)
        with pytest.raises(SearchError) as search_error:
            prefilter.active_model(conn)
    with Session(engine) as session, pytest.raises(SearchError) as orm_error:
        orm.active_model(session)
    assert str(registry_error.value) == str(search_error.value) == str(orm_error.value) == message


def test_a_record_says_what_to_load(engine: Engine, tmp_path: Path) -> None:
    checkpoint = tmp_path / "m.safetensors"
    from_file = register(engine, ModelIdentity("m", "m@1", 2, "0" * 64, {"checkpoint": str(checkpoint)}))
    default = register(engine, ModelIdentity("d", "d@1", 2, "0" * 64, {"model": {"pooling_power": 3.0}}))
    with engine.connect() as conn:
        assert get(conn, from_file.id) == from_file
        with pytest.raises(RegistryError, match="^model 999 is not registered$"):
            get(conn, 999)
    assert (from_file.checkpoint, from_file.model_config) == (checkpoint, None)
    assert (default.checkpoint, default.model_config) == (None, {"pooling_power": 3.0})


def test_coverage_of_one_version_and_a_settled_model_that_embedded_nothing(
    engine: Engine, switching: tuple[int, int]
) -> None:
    _, second = switching
    for _ in range(3):
        kill(engine, second)
    with engine.connect() as conn:
        (row,) = coverage(conn, version="m@2")
        assert [r.model.version for r in coverage(conn)] == ["m@1", "m@2"]
    assert (row.model.version, row.embedded, row.dead, row.open_jobs) == ("m@2", 0, 3, 0)
    assert (row.settled, row.complete) == (True, False)


class FakeWorker:
    """Stands in for the demo's worker process: counts how often the demo looked at it."""

    def __init__(self, returncode: int | None = None) -> None:
        self.returncode = returncode
        self.polls = 0

    def poll(self) -> int | None:
        self.polls += 1
        return self.returncode


def test_the_demo_waits_for_the_dispatchers_switch_not_only_for_the_embeddings(
    engine: Engine, switching: tuple[int, int], tmp_path: Path
) -> None:
    _, second = switching
    assert embed(engine, second) == 3
    worker, embedded = FakeWorker(), []
    waiting = Thread(target=lambda: embedded.append(wait_until_serving(engine, "m@2", worker, tmp_path / "log")))
    waiting.start()
    wait_for(lambda: worker.polls > 0)  # every product embedded, and the demo still waits
    assert waiting.is_alive() and states(engine)["m@2"] == "backfilling"
    housekeeping(engine)
    waiting.join()
    assert embedded == [3]


def test_the_demo_stops_waiting_when_its_worker_exits(
    engine: Engine, switching: tuple[int, int], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError) as raised:
        wait_until_serving(engine, "m@2", FakeWorker(returncode=1), tmp_path / "log")
    assert str(raised.value) == f"the worker exited with status 1; see {tmp_path / 'log'}"


def test_the_two_scale_default_is_registered_from_the_command_line_and_a_bad_size_is_refused(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    refused = CliRunner().invoke(main, ["model", "register", "--second-input-size", "300"])
    assert refused.exit_code == 2, refused.output
    assert "second_input_size 300: expected a whole number from 32 to 1024, a multiple of 32" in refused.output
    assert states(engine) == {}, "nothing registered"
    result = CliRunner().invoke(main, ["model", "register", "--second-input-size", "320"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ynet-lite0-default@dee8bed5 (ynet-lite0-default, 1280 dims)"), result.output
    with engine.connect() as conn:
        config = conn.execute(text("SELECT config FROM ynet.models")).scalar_one()
    assert config["model"]["second_input_size"] == 320, "workers rebuild the model from the registered config"


def change(engine: Engine, product: str, assignment: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE ynet.products SET {assignment} WHERE external_id = :p"), {"p": product})


def queued_products(engine: Engine, model_id: int) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT p.external_id FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
                "WHERE j.model_id = :m AND j.state IN ('pending', 'retry', 'running') ORDER BY 1"
            ),
            {"m": model_id},
        )
        return list(rows.scalars())


@pytest.fixture
def rolled_forward(engine: Engine, switching: tuple[int, int]) -> tuple[int, int]:
    """m@2 has replaced m@1, which is retired with its vectors of a, b, c and d kept."""
    first, second = switching
    add_product(engine, "d")
    assert (embed(engine, first), embed(engine, second)) == (1, 4)
    promoted = promote_if_complete(engine)
    assert promoted is not None and states(engine) == {"m@1": "retired", "m@2": "active"}
    return switching


def test_a_rollback_re_embeds_what_changed_while_its_model_was_retired(
    engine: Engine, rolled_forward: tuple[int, int]
) -> None:
    first, second = rolled_forward
    change(engine, "a", "image_uri = '/img/a2'")
    change(engine, "b", "tags = '{color:blue}'")
    change(engine, "c", "price = 12, stock = 3")
    assert queued_products(engine, first) == [], "the triggers record no work for a retired model"
    assert embed(engine, second) == 2, "a and b under the active model"
    rollback = activate(engine, "m@1")
    assert (rollback.model.state, rollback.backfill_jobs) == ("backfilling", 2)
    assert queued_products(engine, first) == ["a", "b"], "c's change was its price, d did not change"
    assert promote_if_complete(engine) is None, "a and b have their old vectors only"
    with engine.connect() as conn:
        (row,) = coverage(conn, version="m@1")
    assert (row.embedded, row.products, row.open_jobs, row.dead) == (2, 4, 2, 0)
    assert embed(engine, first) == 2
    promoted = promote_if_complete(engine)
    assert promoted is not None and promoted.version == "m@1"


def test_a_rollback_queues_a_changed_product_whose_old_job_is_still_running(
    engine: Engine, switching: tuple[int, int]
) -> None:
    """A job claimed before the change is open, but its write will be refused: it queues nothing for the product."""
    first, second = switching
    change(engine, "a", "image_uri = '/img/a2'")
    (running,) = jobs.claim(engine, "slow", 1, model_id=first)
    assert embed(engine, second) == 3
    assert promote_if_complete(engine) is not None and states(engine)["m@1"] == "retired"
    change(engine, "a", "image_uri = '/img/a3'")
    assert activate(engine, "m@1").backfill_jobs == 1
    assert not jobs.complete(engine, running, "slow", [1.0, 0.0], "a" * 64), "made for /img/a2"
    assert queued_products(engine, first) == ["a"]


def test_an_activation_decided_on_a_model_that_no_longer_serves_is_refused(
    engine: Engine, switching: tuple[int, int]
) -> None:
    first, second = switching
    register(engine, identity("m@3"))
    before = states(engine), queued_products(engine, second)
    for stale in ("m@2", None):
        with pytest.raises(ActiveModelChanged) as refused:
            activate(engine, "m@3", expected_active=stale)
        assert str(refused.value) == (
            f"the active model is m@1, not {stale or 'none'} as expected: it changed since the caller looked, "
            "so nothing was activated; decide again"
        )
        assert (states(engine), queued_products(engine, second)) == before, "m@2's back-fill goes on"
    accepted = activate(engine, "m@3", expected_active="m@1")
    assert (accepted.model.state, accepted.backfill_jobs) == ("backfilling", 3)
    assert states(engine) == {"m@1": "active", "m@2": "registered", "m@3": "backfilling"}


def test_with_no_model_active_an_activation_expecting_none_serves_at_once(engine: Engine) -> None:
    add_product(engine, "a")
    register(engine, identity("m@1"))
    first = activate(engine, "m@1", expected_active=None)
    assert (first.model.state, first.backfill_jobs) == ("active", 1)
    with pytest.raises(ActiveModelChanged, match="^the active model is m@1, not none as expected"):
        activate(engine, register(engine, identity("m@2")).version, expected_active=None)
    assert states(engine) == {"m@1": "active", "m@2": "registered"}


def test_the_command_line_activates_only_on_the_active_model_it_was_told_to_expect(
    engine: Engine, switching: tuple[int, int], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    register(engine, identity("m@3"))
    for stale in ("m@2", "none"):
        refused = CliRunner().invoke(main, ["model", "activate", "m@3", "--expect-active", stale])
        assert refused.exit_code == 1
        assert f"the active model is m@1, not {stale} as expected" in refused.output
        assert states(engine)["m@3"] == "registered"
    accepted = CliRunner().invoke(main, ["model", "activate", "m@3", "--expect-active", "m@1"])
    assert (accepted.exit_code, accepted.output.splitlines()[0]) == (0, "m@3: backfilling, 3 products queued")
