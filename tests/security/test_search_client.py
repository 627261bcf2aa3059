"""A search client role (`ynet.grant_search_client`) inserts requests and reads its own answers, and nothing else.

Real login roles on the test server, as in test_privileges.py (each unique, dropped afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
from roles import connect
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from ynet_db.search.query import SearchResult, SearchRow
from ynet_db.search.requests import queue

PNG = b"\x89PNG\r\n\x1a\n"
INSERT = 'INSERT INTO ynet.search_requests (image, k, filters) VALUES (%s, 5, \'{"category": "dress"}\') RETURNING id'


@pytest.fixture
def client_role(role: Callable[[str], URL]) -> Callable[[], URL]:
    """make() -> a URL that logs in as a new role granted search only."""
    return lambda: role("SELECT ynet.grant_search_client(CAST('{role}' AS regrole))")


def ask(conn: psycopg.Connection) -> int:
    row = conn.execute(INSERT, (PNG,)).fetchone()
    assert row is not None
    return int(row[0])


def answer(engine: Engine, request_id: int) -> None:
    rows = [SearchRow(1, 7, "sku-7", "Red dress", "dress", [], "", 0.25, None, "m@1")]
    queue.claim(engine, "w1", 10)
    assert queue.answer(engine, "w1", [(request_id, SearchResult(rows, "m@1", "ann", False, 256, 1, False))])


def test_a_client_inserts_a_request_and_reads_its_answer(engine: Engine, client_role: Callable[[], URL]) -> None:
    with connect(client_role()) as client:
        request_id = ask(client)
        answer(engine, request_id)
        rows = client.execute("SELECT rank, external_id, distance FROM ynet.search_wait(%s, 5)", (request_id,))
        assert rows.fetchall() == [(1, "sku-7", 0.25)]
        state = client.execute("SELECT state, k, filters FROM ynet.search_requests WHERE id = %s", (request_id,))
        assert state.fetchone() == ("done", 5, {"category": "dress"})


def test_a_client_sees_no_other_clients_requests_or_results(engine: Engine, client_role: Callable[[], URL]) -> None:
    with connect(client_role()) as alice, connect(client_role()) as bob:
        request_id = ask(alice)
        answer(engine, request_id)
        assert bob.execute("SELECT count(*) FROM ynet.search_requests").fetchone() == (0,)
        assert bob.execute("SELECT count(*) FROM ynet.search_results").fetchone() == (0,)
        with pytest.raises(psycopg.errors.NoDataFound, match=f"no search request {request_id}"):
            bob.execute("SELECT * FROM ynet.search_wait(%s, 1)", (request_id,))


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("INSERT INTO ynet.search_requests (image, requested_by) VALUES ('\\x00', 'someone')", "search_requests"),
        ("INSERT INTO ynet.search_requests (image, expires_at) VALUES ('\\x00', 'infinity')", "search_requests"),
        ("INSERT INTO ynet.search_requests (image, state) VALUES ('\\x00', 'done')", "search_requests"),
        ("UPDATE ynet.search_requests SET state = 'done'", "search_requests"),
        ("DELETE FROM ynet.search_requests", "search_requests"),
        ("INSERT INTO ynet.search_results VALUES (1, 1, 1, 'x', 'x', 'x', 0, 0)", "search_results"),
        ("SELECT count(*) FROM ynet.products", "products"),
        ("SELECT count(*) FROM ynet.embeddings", "embeddings"),
        ("SELECT ynet.grant_search_client(current_user::text::regrole)", "grant_search_client"),
    ],
)
def test_a_client_can_do_nothing_else(client_role: Callable[[], URL], statement: str, message: str) -> None:
    with connect(client_role()) as client, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        client.execute(statement)
    assert f"permission denied for {'function' if 'grant' in message else 'table'} {message}" in str(refused.value)


def test_a_role_without_the_grant_cannot_search(engine: Engine, database_url: URL) -> None:
    name = f"ynet_test_nobody_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
    try:
        with connect(database_url.set(username=name, password=None)) as nobody:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema ynet"):
                nobody.execute(INSERT, (PNG,))
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP ROLE "{name}"'))
