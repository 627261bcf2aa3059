"""Functions behind `ynet-db attach`: keep ynet.products in step with a table the shop already has.

The triggers `attach` installs on the shop's table call `attached_row_changed` with the column names
as trigger arguments; the row is read through `to_jsonb(NEW) ->> column`, so no user-supplied name is
ever spliced into a function body.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FUNCTIONS = """
CREATE FUNCTION ynet.attached_product_upsert(r jsonb, cols text[]) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    external text := r ->> cols[1];
    image text := r ->> cols[2];
    tag_value jsonb := r -> nullif(cols[4], '');
    tag_list text[];
BEGIN
    IF external IS NULL THEN
        RETURN false;
    END IF;
    IF image IS NULL OR image = '' THEN
        DELETE FROM ynet.products WHERE external_id = external;
        RETURN FOUND;
    END IF;
    tag_list := CASE jsonb_typeof(tag_value)
        WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(tag_value))
        WHEN 'string' THEN ARRAY(SELECT btrim(t) FROM regexp_split_to_table(tag_value #>> '{}', '[,|;]') AS t
                                  WHERE btrim(t) <> '')
        ELSE '{}'::text[] END;
    INSERT INTO ynet.products AS p (external_id, title, category, tags, image_uri)
    VALUES (external, coalesce(r ->> nullif(cols[5], ''), ''), coalesce(r ->> cols[3], ''), tag_list, image)
    ON CONFLICT (external_id) DO UPDATE
       SET title = EXCLUDED.title, category = EXCLUDED.category, tags = EXCLUDED.tags,
           image_uri = EXCLUDED.image_uri
     WHERE (p.title, p.category, p.tags, p.image_uri)
           IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.category, EXCLUDED.tags, EXCLUDED.image_uri);
    RETURN FOUND;
END $$;

CREATE FUNCTION ynet.attached_row_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cols text[] := ARRAY(SELECT unnest(TG_ARGV));  -- 1-based: id, image, category, tags, title
    old_id text := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) ->> cols[1] END;
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_id IS DISTINCT FROM to_jsonb(NEW) ->> cols[1]) THEN
        DELETE FROM ynet.products WHERE external_id = old_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM ynet.attached_product_upsert(to_jsonb(NEW), cols);
    END IF;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute(FUNCTIONS)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS ynet.attached_row_changed()")
    op.execute("DROP FUNCTION IF EXISTS ynet.attached_product_upsert(jsonb, text[])")
