"""`ynet.products.content_changed_at`: a back-fill re-embeds what changed while its model was retired; revision
0001's check constraints get the names it meant.

- A product's content, for an encoder, is its image (URI or content hash) and its tags: what makes the
  triggers record work (revisions 0001 and 0008). `content_changed_at` is when that content last changed: the
  column's default on insert, and a BEFORE UPDATE trigger on the columns and condition of
  `products_record_jobs_on_change`. An embedding written before it is stale (`ynet_db.ingestion.jobs`,
  `CURRENT_EMBEDDING`): a model's back-fill queues the product again, and its coverage does not count it, so a
  retired model activated again (a rollback) is switched to only when its changed products are embedded anew,
  not with their old vectors. Before this revision the operator deleted those vectors by hand.
- Rows that exist now get their `updated_at`, the last change of any kind: it is never earlier than the last
  image or tag change, so none made before this revision is missed (`now()` would make every embedding stale,
  `created_at` would miss them all). The price: a product whose price or stock changed after a model that is
  not serving embedded it is re-embedded once when that model is activated again, as the manual DELETE did.
- Revision 0001 spelled its check constraints in full (`ck_models_state`) and the naming convention of the
  migration environment prefixed them again (`ck_models_ck_models_state`). They are renamed to the names the
  ORM gives them (`ynet_db.db.tables`), and back on downgrade.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The triggers' own `updated_at` stamp stays what it was: filling the column is no change of the products.
ADD_COLUMN = """
ALTER TABLE ynet.products ADD COLUMN content_changed_at timestamptz;
ALTER TABLE ynet.products DISABLE TRIGGER products_touch_updated_at;
UPDATE ynet.products SET content_changed_at = updated_at;
ALTER TABLE ynet.products ENABLE TRIGGER products_touch_updated_at;
ALTER TABLE ynet.products ALTER COLUMN content_changed_at SET DEFAULT now(),
                          ALTER COLUMN content_changed_at SET NOT NULL;
COMMENT ON COLUMN ynet.products.content_changed_at IS
    'When the image or the tags last changed (or the row was inserted); an embedding older than this is stale.';
"""

# The columns and condition of products_record_jobs_on_change (revision 0008): a change that makes work.
TOUCH_CONTENT_CHANGED_AT = """
CREATE FUNCTION ynet.touch_content_changed_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.content_changed_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER products_touch_content_changed_at BEFORE UPDATE OF image_uri, image_sha256, tags
    ON ynet.products FOR EACH ROW
    WHEN (OLD.image_uri IS DISTINCT FROM NEW.image_uri
          OR OLD.image_sha256 IS DISTINCT FROM NEW.image_sha256
          OR OLD.tags IS DISTINCT FROM NEW.tags)
    EXECUTE FUNCTION ynet.touch_content_changed_at();
"""

DOUBLED_CHECKS = (
    ("models", "ck_models_embedding_dim_indexable"),
    ("models", "ck_models_state"),
    ("embedding_jobs", "ck_embedding_jobs_state"),
)
"""(table, intended name) of each check constraint revision 0001 made; its name in the database is
`ck_<table>_` + the intended name."""


def _rename_checks(doubled_to_intended: bool) -> None:
    for table, name in DOUBLED_CHECKS:
        doubled = f"ck_{table}_{name}"
        old, new = (doubled, name) if doubled_to_intended else (name, doubled)
        op.execute(f"ALTER TABLE ynet.{table} RENAME CONSTRAINT {old} TO {new}")


def upgrade() -> None:
    op.execute(ADD_COLUMN)
    op.execute(TOUCH_CONTENT_CHANGED_AT)
    _rename_checks(doubled_to_intended=True)


def downgrade() -> None:
    _rename_checks(doubled_to_intended=False)
    op.execute("DROP TRIGGER products_touch_content_changed_at ON ynet.products")
    op.execute("DROP FUNCTION ynet.touch_content_changed_at()")
    op.execute("ALTER TABLE ynet.products DROP COLUMN content_changed_at")
