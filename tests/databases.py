"""Creating and dropping the tests' databases on the test server (tests/conftest.py puts this folder on the path)."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from ynet_db.db.server import libpq_dsn


def _admin(server_url: URL) -> psycopg.Connection:
    return psycopg.connect(libpq_dsn(server_url), autocommit=True)


def create_database(server_url: URL, template: str | None = None, name: str | None = None) -> URL:
    name = name or f"ynet_test_{uuid.uuid4().hex[:12]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _admin(server_url) as conn:
        conn.execute(statement)
    return server_url.set(database=name)


def drop_database(server_url: URL, name: str) -> None:
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
