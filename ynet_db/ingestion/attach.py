"""Attach a table the shop already has: triggers keep `ynet.products` in step with it.

`attach` checks the table and its columns in the catalog, installs three row triggers on it (insert,
update of the watched columns, delete) and back-fills the rows it already holds, all in one
transaction: the triggers' lock holds off the shop's writes until the back-fill is committed, so no
row is missed or copied twice. A product's `external_id` is the shop row's id as text and its `source`
the table's name, so the table's ids never meet those of the import or of another attached table.

The triggers call one generic function (migrations 0004 and 0008) with the column names and the source as
trigger arguments and read the row through `to_jsonb(NEW) ->> column`, so no user-supplied name is ever
spliced into a function body; in the trigger definitions names are quoted with `psycopg.sql.Identifier`
and passed as literals.

- An update that changes none of the id, image, category, tags or title columns does not fire at
  all (`UPDATE OF` plus a `WHEN` that compares old and new), so price and stock updates cost nothing.
- A row without an image is not a product: it is removed from the catalogue (a job could never run).
- Tags may be an array of text or one string delimited by `,`, `|` or `;`.
- Deleting a row deletes its product, and with it its embeddings and jobs (foreign keys cascade).
The functions run as their owner (SECURITY DEFINER, fixed search_path), so the shop's own role
needs no rights on the ynet schema; only their owner may execute them (migration 0008), so the role
that runs `attach` is the one that migrated the schema or was granted EXECUTE on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql
from sqlalchemy import Connection, Engine, text

TRIGGERS = ("ynet_catalogue_insert", "ynet_catalogue_update", "ynet_catalogue_delete")
STRING_CATEGORY = "S"


class AttachError(ValueError):
    """A table or column that cannot be attached; the message says which and why."""


@dataclass(frozen=True)
class Columns:
    id: str
    image: str
    category: str
    tags: str | None = None
    title: str | None = None

    @property
    def watched(self) -> list[str]:
        return [c for c in (self.id, self.image, self.category, self.tags, self.title) if c is not None]

    def arguments(self, source: str) -> list[str]:
        """The trigger arguments, in the order the functions read them; '' for an absent column."""
        return [self.id, self.image, self.category, self.tags or "", self.title or "", source]


@dataclass(frozen=True)
class Attached:
    table: str
    backfilled: int


# The qualified name is spelled as the triggers spell their source when they are given none (0008).
FIND_TABLE = text(
    """
    SELECT c.oid, n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), c.relkind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = to_regclass(:name)
    """
)
COLUMNS = text(
    """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory, coalesce(e.typcategory, '')
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
     WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum
    """
)
RECORD = text(
    """
    INSERT INTO ynet.attachments (source_table, id_column, image_column, tags_column, category_column, title_column)
    VALUES (:table, :id, :image, :tags, :category, :title)
    ON CONFLICT (source_table) DO UPDATE
       SET id_column = EXCLUDED.id_column, image_column = EXCLUDED.image_column, tags_column = EXCLUDED.tags_column,
           category_column = EXCLUDED.category_column, title_column = EXCLUDED.title_column, created_at = now()
    """
)


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    qualified: str
    """schema.name, each part quoted where SQL needs it: the products' `source`."""

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


def find_table(conn: Connection, name: str) -> Table:
    try:
        with conn.begin_nested():
            row = conn.execute(FIND_TABLE, {"name": name}).first()
    except Exception as error:  # to_regclass still rejects malformed names such as 'a.b.c.d'
        raise AttachError(f"{name!r} is not a table name") from error
    if row is None:
        raise AttachError(f"no table named {name!r}")
    oid, schema, relname, qualified, kind = row
    table = Table(oid, schema, relname, qualified)
    if kind not in ("r", "p"):
        raise AttachError(f"{table.qualified} is not a table")
    if schema == "ynet":
        raise AttachError(f"{table.qualified} is ynet-db's own table; attach one of the shop's tables")
    return table


def check_columns(conn: Connection, table: Table, columns: Columns) -> None:
    present = {
        name: (type_, category, element) for name, type_, category, element in conn.execute(COLUMNS, {"oid": table.oid})
    }
    for column in columns.watched:
        if column not in present:
            raise AttachError(f"{table.qualified} has no column {column!r} (it has: {', '.join(present)})")
    if columns.tags is not None:
        type_, category, element = present[columns.tags]
        if category != STRING_CATEGORY and element != STRING_CATEGORY:
            raise AttachError(
                f"{table.qualified}.{columns.tags} is {type_}: tags must be an array of text or delimited text"
            )


def attach(engine: Engine, table_name: str, columns: Columns) -> Attached:
    """Install the triggers on the shop's table, back-fill its rows and record the attachment."""
    with engine.begin() as conn:
        table = find_table(conn, table_name)
        check_columns(conn, table, columns)
        raw = conn.connection.driver_connection
        for statement in _trigger_statements(table, columns):
            raw.execute(statement)  # type: ignore[union-attr]
        backfilled = raw.execute(_backfill_statement(table, columns)).fetchone()[0]  # type: ignore[union-attr]
        conn.execute(
            RECORD,
            {"table": table.qualified, "id": columns.id, "image": columns.image, "tags": columns.tags}
            | {"category": columns.category, "title": columns.title},
        )
        return Attached(table.qualified, int(backfilled))


def _trigger_statements(table: Table, columns: Columns) -> list[sql.Composed]:
    args = sql.SQL(", ").join(sql.Literal(value) for value in columns.arguments(table.qualified))
    changed = sql.SQL(" OR ").join(
        sql.SQL("OLD.{0} IS DISTINCT FROM NEW.{0}").format(sql.Identifier(column)) for column in columns.watched
    )
    watched = sql.SQL(", ").join(sql.Identifier(column) for column in columns.watched)
    insert, update, delete = (sql.Identifier(name) for name in TRIGGERS)
    function = sql.SQL("EXECUTE FUNCTION ynet.attached_row_changed({})").format(args)
    on = table.identifier
    return [
        *_drop_statements(table),
        sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} FOR EACH ROW {}").format(insert, on, function),
        sql.SQL("CREATE TRIGGER {} AFTER UPDATE OF {} ON {} FOR EACH ROW WHEN ({}) {}").format(
            update, watched, on, changed, function
        ),
        sql.SQL("CREATE TRIGGER {} AFTER DELETE ON {} FOR EACH ROW {}").format(delete, on, function),
    ]


def _drop_statements(table: Table) -> list[sql.Composed]:
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table.identifier) for name in TRIGGERS
    ]


def _backfill_statement(table: Table, columns: Columns) -> sql.Composed:
    args = sql.SQL(", ").join(sql.Literal(value) for value in columns.arguments(table.qualified))
    return sql.SQL(
        "SELECT count(*) FILTER (WHERE ynet.attached_product_upsert(to_jsonb(t), ARRAY[{}]::text[])) FROM {} AS t"
    ).format(args, table.identifier)


def detach(engine: Engine, table_name: str) -> str:
    """Remove the triggers and the record; the products already copied stay in the catalogue."""
    with engine.begin() as conn:
        table = find_table(conn, table_name)
        raw = conn.connection.driver_connection
        for statement in _drop_statements(table):
            raw.execute(statement)  # type: ignore[union-attr]
        deleted = conn.execute(
            text("DELETE FROM ynet.attachments WHERE source_table = :table"), {"table": table.qualified}
        ).rowcount
        if not deleted:
            raise AttachError(f"{table.qualified} is not attached")
        return table.qualified
