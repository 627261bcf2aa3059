"""Engines and sessions. One engine per process; the caller owns sessions and transactions."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from ynet_db.config import Settings
from ynet_db.db.server import database_url


def make_engine(url: URL | str, **options: object) -> Engine:
    # pre_ping: a pooled connection may have died with a database restart.
    return create_engine(url, pool_pre_ping=True, **options)


def engine_from_settings(settings: Settings) -> Engine:
    return make_engine(database_url(settings))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
