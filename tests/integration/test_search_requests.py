"""The SQL request path's table, queue and `ynet.search_wait`, on a real database (no model: answers are made
here; tests/fault/test_search_worker_process.py runs the real worker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from importlib import import_module

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from ynet_db.db.server import libpq_dsn
from ynet_db.images.decode import DEFAULT_LIMITS
from ynet_db.images.uri import MAX_URI_LENGTH
from ynet_db.search.filters import MAX_K
from ynet_db.search.query import SearchResult, SearchRow
from ynet_db.search.requests import queue

REVISION = import_module("ynet_db.migrations.versions.0010_search_requests")
PNG = b"\x89PNG\r\n\x1a\n not really"


def insert(engine: Engine, **columns: object) -> int:
    values = {"image": PNG, "k": 3, **columns}
    names = ", ".join(values)
    params = ", ".join(f":{name}" for name in values)
    with engine.begin() as conn:
        return int(
            conn.execute(
                text(f"INSERT INTO ynet.search_requests ({names}) VALUES ({params}) RETURNING id"), values
            ).scalar_one()
        )


def request(engine: Engine, request_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM ynet.search_requests WHERE id = :id"), {"id": request_id}).one()
    return dict(row._mapping)


def result(*names: str, reranked: bool = True) -> SearchResult:
    rows = [
        SearchRow(
            rank,
            100 + rank,
            name,
            f"title {name}",
            "dress",
            [],
            "",
            0.1 * rank,
            1.0 / rank if reranked else None,
            "m@1",
        )
        for rank, name in enumerate(names, 1)
    ]
    return SearchResult(rows, "m@1", "exact", False, 10, len(rows), reranked)


@pytest.fixture
def client(engine: Engine) -> Iterator[psycopg.Connection]:
    """A backend's connection: only a driver, autocommit, as PHP or Node would hold it."""
    with psycopg.connect(libpq_dsn(engine.url), autocommit=True) as conn:
        yield conn


def wait_error(conn: psycopg.Connection, request_id: int, timeout: float = 0.0) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM ynet.search_wait(%s, %s)", (request_id, timeout)).fetchall()
    return raised.value


# -- what the table accepts ------------------------------------------------------------------------------


def test_the_migrations_bounds_are_the_python_apis() -> None:
    assert (REVISION.MAX_K, REVISION.MAX_IMAGE_BYTES, REVISION.MAX_URL_LENGTH) == (
        MAX_K,
        DEFAULT_LIMITS.max_bytes,
        MAX_URI_LENGTH,
    )


@pytest.mark.parametrize(
    ("columns", "constraint"),
    [
        ({"k": 0}, "ck_search_requests_k"),
        ({"k": MAX_K + 1}, "ck_search_requests_k"),
        ({"image": None}, "ck_search_requests_one_image"),
        ({"image_url": "https://shop.example/a.jpg"}, "ck_search_requests_one_image"),
        ({"image": None, "image_url": "file:///etc/shadow"}, "ck_search_requests_image_url"),
        ({"image": None, "image_url": "/data/catalogue/a.jpg"}, "ck_search_requests_image_url"),
        ({"image": None, "image_url": "https://x.example/" + "a" * MAX_URI_LENGTH}, "ck_search_requests_image_url"),
    ],
)
def test_a_request_the_worker_could_not_take_is_refused_at_insert(
    engine: Engine, columns: dict[str, object], constraint: str
) -> None:
    with pytest.raises(IntegrityError, match=f'violates check constraint "{constraint}"'):
        insert(engine, **columns)


def test_a_request_starts_pending_and_expires_in_a_minute(engine: Engine) -> None:
    row = request(engine, insert(engine))
    assert (row["state"], row["attempts"], row["answers"], row["requested_by"]) == ("pending", 0, 0, "postgres")
    assert row["expires_at"] - row["created_at"] == timedelta(minutes=1)


# -- claim, answer, fail, release -------------------------------------------------------------------------


def test_a_claimed_request_is_no_other_workers_until_its_lease_passes(engine: Engine) -> None:
    first = insert(engine)
    (claimed,) = queue.claim(engine, "w1", 10, timedelta(milliseconds=300))
    assert (claimed.id, claimed.image, claimed.k, claimed.attempts) == (first, PNG, 3, 1)
    assert queue.claim(engine, "w2", 10) == []
    time.sleep(0.4)
    (again,) = queue.claim(engine, "w2", 10)
    assert (again.id, again.attempts) == (first, 2)
    # The first worker comes back late: its answer is refused, the second's counts once.
    assert queue.answer(engine, "w1", [(first, result("a", "b"))]) == []
    assert queue.answer(engine, "w2", [(first, result("c"))]) == [first]
    assert queue.answer(engine, "w2", [(first, result("c"))]) == []
    row = request(engine, first)
    assert (row["state"], row["answers"], row["claimed_by"]) == ("done", 1, "w2")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT external_id FROM ynet.search_results")).scalars().all() == ["c"]


def test_claims_are_oldest_first_and_skip_what_another_transaction_holds(engine: Engine) -> None:
    ids = [insert(engine) for _ in range(4)]
    with engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT id FROM ynet.search_requests WHERE id = :id FOR UPDATE"), {"id": ids[0]})
        assert [r.id for r in queue.claim(engine, "w1", 2)] == ids[1:3]
        holder.rollback()
    assert [r.id for r in queue.claim(engine, "w2", 10)] == [ids[0], ids[3]]


def test_an_answer_comes_back_from_search_wait_in_rank_order(engine: Engine, client: psycopg.Connection) -> None:
    request_id = insert(engine)
    queue.claim(engine, "w1", 1)
    queue.answer(engine, "w1", [(request_id, result("a", "b", "c"))])
    rows = client.execute("SELECT * FROM ynet.search_wait(%s, 1)", (request_id,)).fetchall()
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        (1, "a", "title a", "dress"),
        (2, "b", "title b", "dress"),
        (3, "c", "title c", "dress"),
    ]
    assert [r[5] for r in rows] == pytest.approx([0.1, 0.2, 0.3])
    assert [r[6] for r in rows] == pytest.approx([1.0, 0.5, 1 / 3])
    row = request(engine, request_id)
    assert (row["model_version"], row["path"], row["short"], row["reranked"]) == ("m@1", "exact", False, True)


def test_an_answer_without_rows_or_scores_is_still_an_answer(engine: Engine, client: psycopg.Connection) -> None:
    empty, plain = insert(engine), insert(engine)
    queue.claim(engine, "w1", 2)
    assert queue.answer(engine, "w1", [(empty, result()), (plain, result("a", reranked=False))]) == [empty, plain]
    assert client.execute("SELECT * FROM ynet.search_wait(%s, 1)", (empty,)).fetchall() == []
    (row,) = client.execute("SELECT external_id, rerank_score FROM ynet.search_wait(%s, 1)", (plain,)).fetchall()
    assert row == ("a", None)


def test_a_failed_request_answers_its_error(engine: Engine, client: psycopg.Connection) -> None:
    request_id = insert(engine)
    queue.claim(engine, "w1", 1)
    assert queue.fail(engine, "w2", [(request_id, "not mine")]) == []
    assert queue.fail(engine, "w1", [(request_id, "image query: is not an image in a supported format")]) == [
        request_id
    ]
    error = wait_error(client, request_id)
    assert error.sqlstate == "YN001"
    assert f"search request {request_id} failed: image query: is not an image in a supported format" in str(error)
    assert queue.claim(engine, "w3", 10) == []  # the error is the answer: never retried


def test_a_released_request_is_taken_at_once_with_its_attempt_given_back(engine: Engine) -> None:
    request_id = insert(engine)
    queue.claim(engine, "w1", 1)
    assert queue.release(engine, "w2", [request_id]) == 0
    assert queue.release(engine, "w1", [request_id]) == 1
    (again,) = queue.claim(engine, "w2", 1)
    assert (again.id, again.attempts) == (request_id, 1)


def test_a_request_whose_workers_all_died_is_given_up_after_its_attempts(
    engine: Engine, client: psycopg.Connection
) -> None:
    request_id = insert(engine)
    for attempt in range(3):
        assert [r.attempts for r in queue.claim(engine, f"w{attempt}", 1, timedelta(milliseconds=50))] == [attempt + 1]
        time.sleep(0.1)
    assert queue.claim(engine, "w9", 1) == []
    assert queue.sweep(engine).given_up == 1
    error = wait_error(client, request_id)
    assert error.sqlstate == "YN001"
    assert "given up after 3 attempts: every worker that took it stopped before answering" in str(error)


# -- expiry and clean-up ----------------------------------------------------------------------------------


def test_a_request_nobody_answered_in_time_expires(engine: Engine, client: psycopg.Connection) -> None:
    request_id = insert(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ynet.search_requests SET expires_at = now() - interval '1 second'"))
    error = wait_error(client, request_id, timeout=5)  # at once, without waiting for a sweep
    assert error.sqlstate == "YN002"
    assert f"search request {request_id} expired unanswered" in str(error)
    assert queue.claim(engine, "w1", 10) == []
    assert queue.sweep(engine).expired == 1
    assert request(engine, request_id)["state"] == "expired"
    assert wait_error(client, request_id).sqlstate == "YN002"


def test_a_running_request_past_its_expiry_is_left_to_its_worker_until_the_lease_passes(engine: Engine) -> None:
    request_id = insert(engine)
    queue.claim(engine, "w1", 1, timedelta(seconds=30))
    with engine.begin() as conn:
        conn.execute(text("UPDATE ynet.search_requests SET expires_at = now() - interval '1 second'"))
    assert queue.sweep(engine).expired == 0
    assert queue.answer(engine, "w1", [(request_id, result("a"))]) == [request_id]


def test_finished_requests_and_their_results_are_deleted_after_the_retention(engine: Engine) -> None:
    old, recent, open_ = insert(engine), insert(engine), insert(engine)
    queue.claim(engine, "w1", 2)
    queue.answer(engine, "w1", [(old, result("a")), (recent, result("b"))])
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ynet.search_requests SET finished_at = now() - interval '2 hours' WHERE id = :id"), {"id": old}
        )
    assert queue.sweep(engine, retention=timedelta(hours=1)).deleted == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM ynet.search_requests ORDER BY id")).scalars().all() == [recent, open_]
        assert conn.execute(text("SELECT request_id FROM ynet.search_results")).scalars().all() == [recent]


# -- search_wait ---------------------------------------------------------------------------------------------


def test_search_wait_returns_as_soon_as_the_answer_commits(engine: Engine, client: psycopg.Connection) -> None:
    request_id = insert(engine)
    queue.claim(engine, "w1", 1)
    answerer = threading.Timer(0.3, queue.answer, (engine, "w1", [(request_id, result("a"))]))
    answerer.start()
    rows = client.execute("SELECT external_id FROM ynet.search_wait(%s, 30)", (request_id,)).fetchall()
    answerer.join()
    assert rows == [("a",)]


def test_search_wait_says_when_the_answer_has_not_come_yet(engine: Engine, client: psycopg.Connection) -> None:
    request_id = insert(engine)
    error = wait_error(client, request_id, timeout=0.2)
    assert error.sqlstate == "YN003"
    assert f"search request {request_id} was not answered within 0.2 s (it is pending); wait again" in str(error)


@pytest.mark.parametrize(
    ("arguments", "sqlstate", "message"),
    [
        ("999999, 1", "P0002", "no search request 999999"),
        ("1, -1", "22023", "timeout must be between 0 and 3600 seconds, got -1"),
        ("1, NULL", "22023", "timeout must be between 0 and 3600 seconds, got NULL"),
    ],
)
def test_search_wait_refuses_what_it_cannot_wait_for(
    client: psycopg.Connection, arguments: str, sqlstate: str, message: str
) -> None:
    with pytest.raises(psycopg.Error) as raised:
        client.execute(f"SELECT * FROM ynet.search_wait({arguments})")
    assert raised.value.sqlstate == sqlstate
    assert message in str(raised.value)


def test_search_wait_refuses_to_wait_for_a_request_its_own_transaction_has_not_committed(
    client: psycopg.Connection,
) -> None:
    with client.transaction():
        (request_id,) = client.execute(
            "INSERT INTO ynet.search_requests (image) VALUES (%s) RETURNING id", (PNG,)
        ).fetchone()  # type: ignore[misc]
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="is not committed yet: commit the INSERT"):
            client.execute("SELECT * FROM ynet.search_wait(%s, 5)", (request_id,))
        raise psycopg.Rollback


def test_search_wait_refuses_a_snapshot_that_could_never_see_the_answer(
    engine: Engine, client: psycopg.Connection
) -> None:
    request_id = insert(engine)
    with client.transaction():
        client.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="needs READ COMMITTED isolation"):
            client.execute("SELECT * FROM ynet.search_wait(%s, 5)", (request_id,))
        raise psycopg.Rollback


# -- notifications ---------------------------------------------------------------------------------------------


def test_inserts_wake_workers_and_answers_are_announced_on_the_requests_channel(
    engine: Engine, client: psycopg.Connection
) -> None:
    with psycopg.connect(libpq_dsn(engine.url), autocommit=True) as listener:
        listener.execute("LISTEN ynet_search_requests")
        request_id = insert(engine)
        listener.execute(f"LISTEN ynet_search_{request_id}")
        queue.claim(engine, "w1", 1)
        queue.answer(engine, "w1", [(request_id, result("a"))])
        heard = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
    assert heard == [("ynet_search_requests", ""), (f"ynet_search_{request_id}", "done")]
