"""`ynet-db attach`: a shop table with its own column names, kept in step by triggers."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.db.tables import Embedding, Model
from ynet_db.ingestion.attach import AttachError, Columns, attach, detach
from ynet_db.ingestion.catalog import import_catalog

SHOP = Columns(id="Item No", image="picture", category="kind", tags="labels", title="name")


@pytest.fixture
def shop(engine: Engine) -> Engine:
    """A shop schema with mixed-case, spaced names, an active model, and two rows before attaching."""
    with engine.begin() as conn:
        conn.execute(text('CREATE SCHEMA "Shop"'))
        conn.execute(
            text(
                'CREATE TABLE "Shop"."Stock Items" ("Item No" bigint PRIMARY KEY, picture text, kind text, '
                "labels text, name text, price numeric(10, 2))"
            )
        )
        conn.execute(
            text(
                'INSERT INTO "Shop"."Stock Items" VALUES '
                "(1, '/img/1.jpg', 'dress', 'color:red| sleeve:long', 'Red dress', 20), "
                "(2, '/img/2.jpg', 'skirt', NULL, 'Skirt', 15)"
            )
        )
    with Session(engine) as session:
        session.add(Model(name="m", version="m@1", embedding_dim=2, weights_sha256="0" * 64, state="active"))
        session.commit()
    return engine


def products(engine: Engine) -> dict[str, tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT external_id, title, category, tags, image_uri FROM ynet.products"))
        return {row[0]: tuple(row[1:]) for row in rows}


def job_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM ynet.embedding_jobs")).scalar_one())


def shop_sql(engine: Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement))


def by_source(engine: Engine) -> dict[tuple[str, str], tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source, external_id, title, image_uri, image_sha256 FROM ynet.products"))
        return {(row[0], row[1]): tuple(row[2:]) for row in rows}


def test_attach_backfills_existing_rows_and_records_the_attachment(shop: Engine) -> None:
    result = attach(shop, '"Shop"."Stock Items"', SHOP)
    assert (result.table, result.backfilled) == ('"Shop"."Stock Items"', 2)
    assert products(shop) == {
        "1": ("Red dress", "dress", ["color:red", "sleeve:long"], "/img/1.jpg"),
        "2": ("Skirt", "skirt", [], "/img/2.jpg"),
    }
    assert job_count(shop) == 2
    with shop.connect() as conn:
        recorded = conn.execute(
            text(
                "SELECT source_table, id_column, image_column, tags_column, category_column, title_column "
                "FROM ynet.attachments"
            )
        ).one()
    assert tuple(recorded) == ('"Shop"."Stock Items"', "Item No", "picture", "labels", "kind", "name")
    # Attaching again is idempotent: nothing changed, so nothing is written and no work is made.
    assert attach(shop, '"Shop"."Stock Items"', SHOP).backfilled == 0
    assert job_count(shop) == 2


def test_inserts_updates_and_deletes_reach_the_catalogue(shop: Engine) -> None:
    attach(shop, '"Shop"."Stock Items"', SHOP)
    shop_sql(shop, """INSERT INTO "Shop"."Stock Items" VALUES (3, '/img/3.jpg', 'coat', 'color:blue', 'Coat', 99)""")
    assert products(shop)["3"] == ("Coat", "coat", ["color:blue"], "/img/3.jpg")
    assert job_count(shop) == 3

    with shop.connect() as conn:
        before = conn.execute(text("SELECT updated_at FROM ynet.products WHERE external_id = '3'")).scalar_one()
    shop_sql(shop, """UPDATE "Shop"."Stock Items" SET price = 79 WHERE "Item No" = 3""")
    with shop.connect() as conn:
        after = conn.execute(text("SELECT updated_at FROM ynet.products WHERE external_id = '3'")).scalar_one()
    assert (job_count(shop), after) == (3, before)  # a price change touches nothing of ynet's

    shop_sql(shop, """UPDATE "Shop"."Stock Items" SET picture = '/img/3b.jpg' WHERE "Item No" = 3""")
    with shop.connect() as conn:
        jobs = conn.execute(
            text(
                "SELECT j.image_uri, j.state FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
                "WHERE p.external_id = '3' ORDER BY j.id"
            )
        ).all()
    assert [tuple(job) for job in jobs] == [("/img/3.jpg", "superseded"), ("/img/3b.jpg", "pending")]

    with Session(shop) as session:
        product_id = session.execute(text("SELECT id FROM ynet.products WHERE external_id = '3'")).scalar_one()
        model_id = session.execute(text("SELECT id FROM ynet.models")).scalar_one()
        session.add(Embedding(product_id=product_id, model_id=model_id, image_sha256="a" * 64, embedding=[1.0, 0.0]))
        session.commit()
    shop_sql(shop, """DELETE FROM "Shop"."Stock Items" WHERE "Item No" = 3""")
    assert "3" not in products(shop)
    with shop.connect() as conn:
        left = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM ynet.embeddings WHERE product_id = :id), "
                "(SELECT count(*) FROM ynet.embedding_jobs WHERE product_id = :id)"
            ),
            {"id": product_id},
        ).one()
    assert tuple(left) == (0, 0)


def test_changing_a_row_id_moves_the_product_and_a_missing_image_removes_it(shop: Engine) -> None:
    attach(shop, '"Shop"."Stock Items"', SHOP)
    shop_sql(shop, """UPDATE "Shop"."Stock Items" SET "Item No" = 10 WHERE "Item No" = 1""")
    shop_sql(shop, """UPDATE "Shop"."Stock Items" SET picture = NULL WHERE "Item No" = 2""")
    assert sorted(products(shop)) == ["10"]


def test_text_array_tags_are_taken_as_they_are(engine: Engine) -> None:
    shop_sql(engine, "CREATE TABLE items (sku text PRIMARY KEY, img text, cat text, tags text[])")
    shop_sql(engine, "INSERT INTO items VALUES ('a', '/a.jpg', 'dress', ARRAY['color:red', 'a|b'])")
    attach(engine, "items", Columns(id="sku", image="img", category="cat", tags="tags"))
    assert products(engine) == {"a": ("", "dress", ["color:red", "a|b"], "/a.jpg")}


def test_detach_removes_the_triggers_and_keeps_the_products(shop: Engine) -> None:
    attach(shop, '"Shop"."Stock Items"', SHOP)
    assert detach(shop, '"Shop"."Stock Items"') == '"Shop"."Stock Items"'
    shop_sql(shop, """INSERT INTO "Shop"."Stock Items" VALUES (3, '/img/3.jpg', 'coat', NULL, 'Coat', 99)""")
    assert sorted(products(shop)) == ["1", "2"]
    with shop.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ynet.attachments")).scalar_one() == 0
    with pytest.raises(AttachError) as refused:
        detach(shop, '"Shop"."Stock Items"')
    assert str(refused.value) == '"Shop"."Stock Items" is not attached'


@pytest.mark.parametrize(
    ("table", "columns", "message"),
    [
        ("nowhere", SHOP, "no table named 'nowhere'"),
        (
            "ynet.products",
            Columns("id", "image_uri", "category"),
            "ynet.products is ynet-db's own table; attach one of the shop's tables",
        ),
        (
            '"Shop"."Stock Items"',
            Columns("Item No", "photo", "kind"),
            '"Shop"."Stock Items" has no column \'photo\' (it has: Item No, picture, kind, labels, name, price)',
        ),
        (
            '"Shop"."Stock Items"',
            Columns("Item No", "picture", "kind", tags="price"),
            '"Shop"."Stock Items".price is numeric(10,2): tags must be an array of text or delimited text',
        ),
    ],
)
def test_attach_refuses_what_it_cannot_keep_in_step(shop: Engine, table: str, columns: Columns, message: str) -> None:
    with pytest.raises(AttachError) as refused:
        attach(shop, table, columns)
    assert str(refused.value) == message
    assert products(shop) == {}


def test_the_command_attaches_and_detaches(shop: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    table = '"Shop"."Stock Items"'
    args = ["attach", table, "--id", "Item No", "--image", "picture", "--category", "kind", "--tags", "labels"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output == f"{table}: attached, 2 products added or updated from its rows\n"
    result = runner.invoke(main, ["attach", table, "--image", "picture"])
    assert result.exit_code == 2 and "attaching needs --id, --category" in result.output
    result = runner.invoke(main, ["attach", "--detach", table])
    assert (result.exit_code, result.output) == (0, f"{table}: detached\n")


def test_an_attached_table_never_changes_or_deletes_an_imported_product(shop: Engine, tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "g1.jpg")
    catalogue = tmp_path / "catalog.csv"
    catalogue.write_text("id,title,category,image\ng1,Imported,dress,g1.jpg\n")
    import_catalog(shop, catalogue)
    imported = by_source(shop)[("import", "g1")]
    shop_sql(shop, "CREATE TABLE items (id text PRIMARY KEY, img text, cat text)")
    shop_sql(shop, "INSERT INTO items VALUES ('g1', 'http://169.254.169.254/latest/meta-data', 'coat')")
    attach(shop, "items", Columns(id="id", image="img", category="cat"))
    assert by_source(shop) == {
        ("import", "g1"): imported,
        ("public.items", "g1"): ("", "http://169.254.169.254/latest/meta-data", None),
    }
    # The import's upsert keeps to its own rows too.
    assert import_catalog(shop, catalogue).unchanged == 1
    shop_sql(shop, "UPDATE items SET id = 'g2' WHERE id = 'g1'")
    assert sorted(by_source(shop)) == [("import", "g1"), ("public.items", "g2")]
    shop_sql(shop, "DELETE FROM items")
    assert by_source(shop) == {("import", "g1"): imported}


def test_two_attached_tables_keep_their_ids_apart(shop: Engine) -> None:
    attach(shop, '"Shop"."Stock Items"', SHOP)
    shop_sql(shop, "CREATE TABLE items (id bigint PRIMARY KEY, img text, cat text)")
    shop_sql(shop, "INSERT INTO items VALUES (1, '/other/1.jpg', 'coat')")
    attach(shop, "items", Columns(id="id", image="img", category="cat"))
    shop_sql(shop, """DELETE FROM "Shop"."Stock Items" WHERE "Item No" = 1""")
    assert sorted(by_source(shop)) == [('"Shop"."Stock Items"', "2"), ("public.items", "1")]


def test_an_image_change_from_the_attached_table_drops_the_old_images_hash(shop: Engine) -> None:
    """A worker refuses an image whose content does not match the job's hash: the old hash would kill the job."""
    attach(shop, '"Shop"."Stock Items"', SHOP)
    shop_sql(shop, "UPDATE ynet.products SET image_sha256 = repeat('a', 64) WHERE external_id = '1'")
    shop_sql(shop, """UPDATE "Shop"."Stock Items" SET name = 'Dress' WHERE "Item No" = 1""")
    assert by_source(shop)[('"Shop"."Stock Items"', "1")] == ("Dress", "/img/1.jpg", "a" * 64)
    shop_sql(shop, """UPDATE "Shop"."Stock Items" SET picture = '/img/1b.jpg' WHERE "Item No" = 1""")
    assert by_source(shop)[('"Shop"."Stock Items"', "1")] == ("Dress", "/img/1b.jpg", None)
    with shop.connect() as conn:
        pending = conn.execute(
            text("SELECT image_uri, image_sha256 FROM ynet.embedding_jobs WHERE state = 'pending' ORDER BY id DESC")
        ).first()
    assert tuple(pending or ()) == ("/img/1b.jpg", None)
