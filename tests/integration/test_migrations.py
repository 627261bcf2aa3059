"""The migrations: one head, up from empty, down and up again, up with data, and agreement with the ORM."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from ynet_db.db import migrate
from ynet_db.db.tables import SCHEMA, Base

TABLES = {
    "products",
    "models",
    "embeddings",
    "embedding_jobs",
    "workers",
    "attachments",
    "search_requests",
    "search_results",
}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names(schema=SCHEMA)) - {migrate.VERSION_TABLE}


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config())


def test_one_head() -> None:
    assert len(_script().get_heads()) == 1


def test_upgrade_from_empty_to_head(empty_engine: Engine) -> None:
    assert migrate.status(empty_engine).current is None
    migrate.upgrade(empty_engine)
    state = migrate.status(empty_engine)
    assert state.up_to_date and state.pending == []
    assert _tables(empty_engine) == TABLES


def test_downgrade_to_base_and_up_again(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "base")
    assert _tables(empty_engine) == set()
    with empty_engine.connect() as conn:
        functions = conn.execute(
            text("SELECT count(*) FROM pg_proc WHERE pronamespace = CAST(:schema AS regnamespace)"), {"schema": SCHEMA}
        ).scalar_one()
    assert functions == 0
    migrate.upgrade(empty_engine)
    assert _tables(empty_engine) == TABLES


def test_upgrade_step_by_step_keeps_data(empty_engine: Engine) -> None:
    revisions = [rev.revision for rev in reversed(list(_script().walk_revisions()))]
    migrate.upgrade(empty_engine, revisions[0])
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, category, tags, image_uri) "
                "VALUES ('sku-1', 'dress', '{color:red}', '/img/1.jpg')"
            )
        )
    for revision in revisions[1:] + ["head"]:
        migrate.upgrade(empty_engine, revision)
        with empty_engine.connect() as conn:
            row = conn.execute(text("SELECT category, tags FROM ynet.products WHERE external_id = 'sku-1'")).one()
        assert (row.category, row.tags) == ("dress", ["color:red"])


def _is_per_model_index(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # The HNSW index of each registered model is made by a trigger, not declared in the ORM.
    return not (type_ == "index" and reflected and name is not None and name.startswith("embeddings_hnsw_model_"))


def test_orm_models_match_migrated_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "target_metadata": Base.metadata,
                "include_schemas": True,
                "include_name": lambda name, type_, parent: type_ != "schema" or name == SCHEMA,
                "include_object": _is_per_model_index,
                "compare_server_default": True,
                "compare_type": True,
                "version_table_schema": SCHEMA,
            },
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def _add_model(conn: Connection, dim: int) -> int:
    return int(
        conn.execute(
            text(
                "INSERT INTO ynet.models (name, version, embedding_dim, weights_sha256) "
                "VALUES ('m', 'm@1', :d, :s) RETURNING id"
            ),
            {"d": dim, "s": "0" * 64},
        ).scalar_one()
    )


def test_a_1280_d_embedding_is_stored_in_its_row_not_in_toast(engine: Engine) -> None:
    """Out-of-line vectors cost every exact distance extra page reads and hide that cost from the planner."""
    with engine.begin() as conn:
        model = _add_model(conn, 1280)
        product = conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, category, image_uri) "
                "VALUES ('p', 'dress', '/p.jpg') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO ynet.embeddings (product_id, model_id, image_sha256, embedding) "
                "VALUES (:p, :m, :s, CAST(array_fill(0.5, ARRAY[1280]) AS vector))"
            ),
            {"p": product, "m": model, "s": "0" * 64},
        )
    with engine.connect() as conn:
        toast = conn.execute(
            text("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'ynet.embeddings'::regclass")
        ).scalar_one()
        assert conn.execute(text(f"SELECT count(*) FROM {toast}")).scalar_one() == 0
        assert conn.execute(text("SELECT pg_relation_size('ynet.embeddings')")).scalar_one() >= 1280 * 4


def test_a_new_model_gets_pgvectors_default_links_and_a_denser_index_on_request(engine: Engine) -> None:
    """m 16 / ef_construction 64 keep each insert cheap; m 32 / 128 is the large catalogue's choice."""
    options = "SELECT reloptions FROM pg_class WHERE relname = ynet.model_index_name(:id)"
    with engine.begin() as conn:
        model = _add_model(conn, 8)
        assert conn.execute(text(options), {"id": model}).scalar_one() == ["m=16", "ef_construction=64"]
        conn.execute(text("SELECT ynet.build_model_index(:id, 32, 128)"), {"id": model})
        assert conn.execute(text(options), {"id": model}).scalar_one() == ["m=32", "ef_construction=128"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("999", "no model with id 999"),
        (":id, 1", "m must be between 2 and 100, got 1"),
        (":id, 32, 40", r"ef_construction must be between 2 \* m \(64\) and 1000, got 40"),
    ],
)
def test_build_model_index_refuses_what_pgvector_would(engine: Engine, arguments: str, message: str) -> None:
    with engine.begin() as conn:
        model = _add_model(conn, 8)
    with pytest.raises(DBAPIError, match=message), engine.begin() as conn:
        conn.execute(text(f"SELECT ynet.build_model_index({arguments})"), {"id": model})


def _products_by_source(conn: Connection) -> list[tuple[str, str]]:
    return [tuple(row) for row in conn.execute(text("SELECT source, external_id FROM ynet.products ORDER BY 1, 2"))]


def test_0008_gives_rows_attached_before_it_their_tables_source(empty_engine: Engine) -> None:
    """Triggers installed at 0007 pass five arguments; after 0008 their rows are the table's, not the import's."""
    migrate.upgrade(empty_engine, "0007")
    arguments = "'id', 'img', 'cat', '', ''"
    with empty_engine.begin() as conn:
        conn.execute(text("CREATE TABLE items (id text PRIMARY KEY, img text, cat text)"))
        for operation in ("INSERT", "DELETE"):
            conn.execute(
                text(
                    f"CREATE TRIGGER ynet_{operation.lower()} AFTER {operation} ON items FOR EACH ROW "
                    f"EXECUTE FUNCTION ynet.attached_row_changed({arguments})"
                )
            )
        conn.execute(text("INSERT INTO items VALUES ('a', '/a.jpg', 'dress'), ('b', '/b.jpg', 'coat')"))
        conn.execute(
            text(
                "INSERT INTO ynet.attachments (source_table, id_column, image_column, category_column) "
                "VALUES ('items', 'id', 'img', 'cat')"
            )
        )
        conn.execute(text("INSERT INTO ynet.products (external_id, category, image_uri) VALUES ('c', 'x', '/c.jpg')"))
    migrate.upgrade(empty_engine)
    with empty_engine.begin() as conn:
        assert _products_by_source(conn) == [("import", "c"), ("public.items", "a"), ("public.items", "b")]
        assert conn.execute(text("SELECT source_table FROM ynet.attachments")).scalar_one() == "public.items"
        conn.execute(text("INSERT INTO ynet.products (external_id, category, image_uri) VALUES ('a', 'x', '/a.jpg')"))
        conn.execute(text("DELETE FROM items WHERE id = 'a'"))  # the old trigger, falling back to the table's name
        assert _products_by_source(conn) == [("import", "a"), ("import", "c"), ("public.items", "b")]
    with pytest.raises(DBAPIError, match="1 external ids are used by more than one source"):
        with empty_engine.begin() as conn:
            conn.execute(text("INSERT INTO items VALUES ('c', '/c2.jpg', 'dress')"))
        migrate.downgrade(empty_engine, "0007")
    with empty_engine.begin() as conn:
        conn.execute(text("DELETE FROM items"))
    migrate.downgrade(empty_engine, "0007")
    with empty_engine.connect() as conn:
        names = conn.execute(text("SELECT external_id FROM ynet.products ORDER BY 1")).scalars().all()
    assert names == ["a", "c"]


def _check_names(conn: Connection) -> set[str]:
    rows = conn.execute(
        text("SELECT conname FROM pg_constraint WHERE connamespace = CAST(:s AS regnamespace) AND contype = 'c'"),
        {"s": SCHEMA},
    )
    return set(rows.scalars())


def _orm_check_names() -> set[str]:
    return {str(c.name) for t in Base.metadata.tables.values() for c in t.constraints if isinstance(c, CheckConstraint)}


def test_0013_names_0001s_checks_as_the_orm_does_and_dates_content_by_the_last_update(empty_engine: Engine) -> None:
    """0001's check names were prefixed twice by the naming convention; existing products get `updated_at`."""
    migrate.upgrade(empty_engine, "0012")
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, category, image_uri, updated_at) "
                "VALUES ('sku-1', 'dress', '/img/1.jpg', '2026-01-02T03:04:05Z')"
            )
        )
        doubled = _check_names(conn)
    assert {f"ck_{name}" for name in ("models_ck_models_state", "embedding_jobs_ck_embedding_jobs_state")} <= doubled
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        assert _check_names(conn) == _orm_check_names() | {
            "ck_search_requests_one_image",
            "ck_search_requests_k",
            "ck_search_requests_image_size",
            "ck_search_requests_image_url",
            "ck_search_requests_filters_size",
        }
        dates = conn.execute(text("SELECT updated_at, content_changed_at FROM ynet.products")).one()
    assert dates[0] == dates[1] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "updated_at untouched"
    migrate.downgrade(empty_engine, "0012")
    with empty_engine.connect() as conn:
        assert _check_names(conn) == doubled
        columns = {c["name"] for c in inspect(conn).get_columns("products", schema=SCHEMA)}
    assert "content_changed_at" not in columns
