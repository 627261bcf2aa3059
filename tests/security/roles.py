"""Connecting as a role the `role` fixture (conftest.py) made."""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import URL

from ynet_db.db.server import libpq_dsn


def connect(url: URL) -> psycopg.Connection:
    return psycopg.connect(libpq_dsn(url), autocommit=True)
