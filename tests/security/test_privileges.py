"""Who may write the catalogue: the attach functions run as their owner, so only their owner may call them.

Each test makes real login roles on the test server (roles are cluster-wide: each name is unique and
each role is dropped afterwards) and connects as them.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from roles import connect
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from ynet_db.ingestion.attach import Columns, attach

Connect = Callable[..., psycopg.Connection]

ROW = """'{"id": "g1", "img": "http://169.254.169.254/latest/meta-data"}'::jsonb"""
UPSERT = f"SELECT ynet.attached_product_upsert({ROW}, ARRAY['id', 'img', 'cat', '', '', %s])"


def products(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source, external_id, image_uri FROM ynet.products ORDER BY 1, 2"))
        return [tuple(row) for row in rows]


READER = "GRANT USAGE ON SCHEMA ynet TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA ynet TO {role}"


@pytest.fixture
def imported(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO ynet.products (external_id, category, image_uri) VALUES ('g1', 'dress', '/img/g1.jpg')")
        )
    return products(engine)


@pytest.mark.parametrize("source", ["import", "public.items"])
def test_a_reader_cannot_write_products_through_the_attach_function(
    engine: Engine, role: Callable[[str], URL], imported: list[tuple[str, str, str]], source: str
) -> None:
    with connect(role(READER)) as reader, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        reader.execute(UPSERT, (source,))
    assert "permission denied for function attached_product_upsert" in str(refused.value)
    assert products(engine) == imported


def test_a_reader_cannot_hang_the_attach_trigger_on_a_table_of_its_own(
    engine: Engine, role: Callable[[str], URL], imported: list[tuple[str, str, str]]
) -> None:
    """Such a trigger, told its source is 'import', would delete imported products as the function's owner."""
    url = role(READER + "; CREATE SCHEMA scratch AUTHORIZATION {role}")
    with connect(url) as reader:
        reader.execute("CREATE TABLE scratch.t (id text, img text, cat text)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            reader.execute(
                "CREATE TRIGGER steal AFTER DELETE ON scratch.t FOR EACH ROW "
                "EXECUTE FUNCTION ynet.attached_row_changed('id', 'img', 'cat', '', '', 'import')"
            )
    assert "permission denied for function ynet.attached_row_changed" in str(refused.value)
    assert products(engine) == imported


def test_the_owner_may_still_call_the_attach_function_but_not_for_the_import(
    engine: Engine, imported: list[tuple[str, str, str]]
) -> None:
    with connect(engine.url) as owner:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="cols\\[6\\] must name the attached table"):
            owner.execute(UPSERT, ("import",))
        owner.execute(UPSERT, ("public.items",))
    assert products(engine) == [*imported, ("public.items", "g1", "http://169.254.169.254/latest/meta-data")]


def test_the_shops_own_writers_keep_the_catalogue_in_step_without_rights_on_ynet(
    engine: Engine, role: Callable[[str], URL]
) -> None:
    """A trigger runs its function without checking EXECUTE: the shop's role needs no grant on ynet."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE items (id text PRIMARY KEY, img text, cat text)"))
    attach(engine, "items", Columns(id="id", image="img", category="cat"))
    writer = role("GRANT SELECT, INSERT, UPDATE, DELETE ON items TO {role}")
    with connect(writer) as shop:
        shop.execute("INSERT INTO items VALUES ('a', '/a.jpg', 'dress'), ('b', '/b.jpg', 'coat')")
        shop.execute("UPDATE items SET img = '/a2.jpg' WHERE id = 'a'")
        shop.execute("DELETE FROM items WHERE id = 'b'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            shop.execute("SELECT count(*) FROM ynet.products")
    assert products(engine) == [("public.items", "a", "/a2.jpg")]
