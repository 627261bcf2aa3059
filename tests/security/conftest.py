"""Real login roles on the test server for the privilege tests: roles are cluster-wide, so each name is
unique and each role is dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL


@pytest.fixture
def role(engine: Engine, database_url: URL) -> Iterator[Callable[[str], URL]]:
    """make(grants) -> a URL that logs in as a new role holding only `grants` (SQL, `{role}` for its name)."""
    made: list[str] = []

    def make(grants: str) -> URL:
        name = f"ynet_test_role_{uuid.uuid4().hex[:12]}"
        made.append(name)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
            for grant in filter(None, (g.strip() for g in grants.split(";"))):
                conn.execute(text(grant.format(role=f'"{name}"')))
        return database_url.set(username=name, password=None)

    yield make
    with engine.begin() as conn:
        for name in made:
            conn.execute(text(f'DROP OWNED BY "{name}"'))
            conn.execute(text(f'DROP ROLE "{name}"'))
