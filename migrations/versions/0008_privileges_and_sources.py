"""Attach functions only for their owner; each source keeps its own ids; what makes embedding work; search
refuses a query vector it cannot answer.

- `ynet.attached_product_upsert` and `ynet.attached_row_changed` run as their owner (SECURITY DEFINER) and
  write `ynet.products`. PostgreSQL grants EXECUTE on a new function to PUBLIC, so any role with USAGE on
  the schema could rewrite or delete products through them. EXECUTE is revoked from PUBLIC: the owner (the
  role that migrates and runs `ynet-db attach`) keeps it, and a trigger calls its function without
  checking EXECUTE, so the shop's writers still need no rights on `ynet`. Another role that attaches
  tables is granted it by name (README).
- A product's key is `(source, external_id)`: imported rows have source 'import', an attached table's rows
  the table's name (`schema.table`, quoted as `format('%I.%I')` quotes), so an attached row never changes
  or deletes an imported product or another table's, and `ynet.more_like_this` takes a `source` when an
  external id is used by several. Triggers installed before this revision pass no source: theirs is the
  table's name. Products an attached table had already written are given its source here.
- The attached upsert clears `image_sha256` when it changes the image: the hash was the old image's, and a
  worker refuses an image whose content does not match the job's hash.
- Revision 0001's comment said the category changes the embedding. No encoder reads the category (TagYNet
  attends by `tags`; a model's vocabulary holds `category:<value>` tags when its training data had them),
  so a change of the category column alone no longer records work. A catalogue whose model should attend
  to the category puts `category:<value>` in the tags.
- `ynet.nearest_products` refuses a NULL query (pgvector ordered every row by a NULL distance and returned
  k arbitrary ones) and a zero vector (its cosine distance to anything is NaN).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _revision(name: str) -> ModuleType:
    return import_module(f"ynet_db.migrations.versions.{name}")


ATTACH_FUNCTIONS = ("ynet.attached_product_upsert(jsonb, text[])", "ynet.attached_row_changed()")

SOURCES = """
ALTER TABLE ynet.products ADD COLUMN source text NOT NULL DEFAULT 'import';
COMMENT ON COLUMN ynet.products.source IS
    'Where the row comes from: ''import'', or the schema-qualified name of the attached table.';
ALTER TABLE ynet.products DROP CONSTRAINT uq_products_external_id;
-- external_id first, so a lookup by external id alone (more_like_this) uses the same index.
ALTER TABLE ynet.products ADD CONSTRAINT uq_products_external_id_source UNIQUE (external_id, source);
"""

# Rows an attached table wrote before this revision carry source 'import'; they are the rows whose
# external id the attached table holds now. The attachment's name is rewritten as `format('%I.%I')`
# spells it, the spelling the triggers fall back to.
ADOPT_ATTACHED_ROWS = """
DO $$
DECLARE
    a record;
BEGIN
    FOR a IN SELECT t.id, t.id_column, format('%I.%I', n.nspname, c.relname) AS name, c.oid::regclass AS tbl
               FROM ynet.attachments t
               JOIN pg_class c ON c.oid = to_regclass(t.source_table)
               JOIN pg_namespace n ON n.oid = c.relnamespace
    LOOP
        UPDATE ynet.attachments SET source_table = a.name WHERE id = a.id;
        EXECUTE format('UPDATE ynet.products p SET source = $1 FROM %s AS t '
                       'WHERE p.source = ''import'' AND p.external_id = to_jsonb(t) ->> $2', a.tbl)
          USING a.name, a.id_column;
    END LOOP;
END $$;
"""

ATTACHED_UPSERT = """
CREATE OR REPLACE FUNCTION ynet.attached_product_upsert(r jsonb, cols text[]) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- cols, 1-based: id, image, category, tags, title, source (the attached table's name)
    external text := r ->> cols[1];
    image text := r ->> cols[2];
    tag_value jsonb := r -> nullif(cols[4], '');
    origin text := nullif(cols[6], '');
    tag_list text[];
BEGIN
    IF origin IS NULL OR origin = 'import' THEN
        RAISE EXCEPTION 'attached_product_upsert: cols[6] must name the attached table, got %', quote_nullable(origin)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF external IS NULL THEN
        RETURN false;
    END IF;
    IF image IS NULL OR image = '' THEN
        DELETE FROM ynet.products WHERE source = origin AND external_id = external;
        RETURN FOUND;
    END IF;
    tag_list := CASE jsonb_typeof(tag_value)
        WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(tag_value))
        WHEN 'string' THEN ARRAY(SELECT btrim(t) FROM regexp_split_to_table(tag_value #>> '{}', '[,|;]') AS t
                                  WHERE btrim(t) <> '')
        ELSE '{}'::text[] END;
    INSERT INTO ynet.products AS p (source, external_id, title, category, tags, image_uri)
    VALUES (origin, external, coalesce(r ->> nullif(cols[5], ''), ''), coalesce(r ->> cols[3], ''), tag_list, image)
    ON CONFLICT (source, external_id) DO UPDATE
       SET title = EXCLUDED.title, category = EXCLUDED.category, tags = EXCLUDED.tags,
           image_uri = EXCLUDED.image_uri,
           -- A hash describes the image it was taken of; a worker refuses a new image under the old hash.
           image_sha256 = CASE WHEN p.image_uri = EXCLUDED.image_uri THEN p.image_sha256 END
     WHERE (p.title, p.category, p.tags, p.image_uri)
           IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.category, EXCLUDED.tags, EXCLUDED.image_uri);
    RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION ynet.attached_row_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cols text[] := ARRAY(SELECT unnest(TG_ARGV));  -- 1-based: id, image, category, tags, title, source
    old_id text := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) ->> cols[1] END;
BEGIN
    -- Triggers installed before revision 0008 pass five arguments; their source is the table's name.
    cols[6] := coalesce(nullif(cols[6], ''), format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME));
    IF cols[6] = 'import' THEN  -- the delete below would reach imported products
        RAISE EXCEPTION 'attached_row_changed: an attached table''s source cannot be ''import'''
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_id IS DISTINCT FROM to_jsonb(NEW) ->> cols[1]) THEN
        DELETE FROM ynet.products WHERE source = cols[6] AND external_id = old_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM ynet.attached_product_upsert(to_jsonb(NEW), cols);
    END IF;
    RETURN NULL;
END $$;
"""

REVOKE = f"""
REVOKE EXECUTE ON FUNCTION {", ".join(ATTACH_FUNCTIONS)} FROM PUBLIC;
COMMENT ON FUNCTION ynet.attached_product_upsert(jsonb, text[]) IS
    'Writes one attached row into ynet.products as the function''s owner; EXECUTE for the owner and the '
    'roles that attach tables only (GRANT EXECUTE ... TO role).';
"""

# Work is recorded for what an encoder reads: the image (its URI or content hash) and the tags.
JOBS_ON_CHANGE = """
DROP TRIGGER products_record_jobs_on_change ON ynet.products;
CREATE TRIGGER products_record_jobs_on_change AFTER UPDATE OF image_uri, image_sha256, tags
    ON ynet.products FOR EACH ROW
    WHEN (OLD.image_uri IS DISTINCT FROM NEW.image_uri
          OR OLD.image_sha256 IS DISTINCT FROM NEW.image_sha256
          OR OLD.tags IS DISTINCT FROM NEW.tags)
    EXECUTE FUNCTION ynet.record_embedding_jobs();
COMMENT ON TRIGGER products_record_jobs_on_change ON ynet.products IS
    'Records embedding work when the image or the tags change; the category column is read by no encoder '
    '(a model attends to the category through a category:<value> tag).';
"""

JOBS_ON_CHANGE_0001 = """
DROP TRIGGER products_record_jobs_on_change ON ynet.products;
CREATE TRIGGER products_record_jobs_on_change AFTER UPDATE OF image_uri, image_sha256, tags, category
    ON ynet.products FOR EACH ROW
    WHEN (OLD.image_uri IS DISTINCT FROM NEW.image_uri
          OR OLD.image_sha256 IS DISTINCT FROM NEW.image_sha256
          OR OLD.tags IS DISTINCT FROM NEW.tags
          OR OLD.category IS DISTINCT FROM NEW.category)
    EXECUTE FUNCTION ynet.record_embedding_jobs();
"""

QUERY_CHECKS = (
    (
        "    SELECT id, version, embedding_dim INTO m FROM ynet.models WHERE state = 'active';\n",
        "    IF query IS NULL THEN\n"
        "        RAISE EXCEPTION 'the query vector is NULL' USING ERRCODE = 'null_value_not_allowed';\n"
        "    END IF;\n",
        "",
    ),
    (
        "            vector_dims(query), m.version, m.embedding_dim USING ERRCODE = 'data_exception';\n    END IF;\n",
        "",
        "    IF vector_norm(query) = 0 THEN\n"
        "        RAISE EXCEPTION 'the query vector is all zeros: its cosine distance to every product is undefined'\n"
        "            USING ERRCODE = 'data_exception';\n"
        "    END IF;\n",
    ),
)


def _nearest_products_with_checks() -> str:
    """Revision 0007's function with the two checks on the query added (its body is otherwise unchanged)."""
    body: str = _revision("0007_sql_search_as_python").NEAREST_PRODUCTS
    for anchor, before, after in QUERY_CHECKS:
        assert body.count(anchor) == 1, f"revision 0007's nearest_products no longer holds {anchor!r}"
        body = body.replace(anchor, before + anchor + after)
    return body


MORE_LIKE_THIS = """
DROP FUNCTION ynet.more_like_this(text, integer, text, text[], text[]);
CREATE FUNCTION ynet.more_like_this(
    product text,
    k integer DEFAULT 20,
    category text DEFAULT NULL,
    tags_any text[] DEFAULT NULL,
    tags_all text[] DEFAULT NULL,
    source text DEFAULT NULL
) RETURNS TABLE (product_id integer, external_id text, distance double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    sources text[];
    found_id integer;
    stored vector;
BEGIN
    -- $6 is `source`: a bare name would be ambiguous with the column.
    SELECT array_agg(p.source ORDER BY p.source) INTO sources
      FROM ynet.products p WHERE p.external_id = product AND ($6 IS NULL OR p.source = $6);
    IF sources IS NULL THEN
        RAISE EXCEPTION 'no product with external id %', quote_literal(product) USING ERRCODE = 'no_data_found';
    END IF;
    IF cardinality(sources) > 1 THEN
        RAISE EXCEPTION 'external id % is used by several sources (%): pass source => one of them',
            quote_literal(product), array_to_string(sources, ', ') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.id, e.embedding INTO found_id, stored
      FROM ynet.products p
      LEFT JOIN ynet.embeddings e
        ON e.product_id = p.id AND e.model_id = (SELECT id FROM ynet.models WHERE state = 'active')
     WHERE p.external_id = product AND p.source = sources[1];
    IF stored IS NULL THEN
        RAISE EXCEPTION 'product % has no embedding under the active model yet', quote_literal(product)
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY SELECT * FROM ynet.nearest_products(stored, k, category, tags_any, tags_all, found_id);
END $$;
COMMENT ON FUNCTION ynet.more_like_this(text, integer, text, text[], text[], text) IS
    'The k products most like the product with this external id (and source, when several sources use '
    'the id), from its stored embedding under the active model (the product itself excluded); filters as '
    'in ynet.nearest_products.';
"""


def upgrade() -> None:
    op.execute(SOURCES)
    op.execute(ADOPT_ATTACHED_ROWS)
    op.execute(ATTACHED_UPSERT)
    op.execute(REVOKE)
    op.execute(JOBS_ON_CHANGE)
    op.execute(_nearest_products_with_checks())
    op.execute(MORE_LIKE_THIS)


SHARED_IDS = """
DO $$
DECLARE
    shared integer := (SELECT count(*) FROM (SELECT 1 FROM ynet.products GROUP BY external_id HAVING count(*) > 1) s);
BEGIN
    IF shared > 0 THEN
        RAISE EXCEPTION 'cannot downgrade below 0008: revision 0007 keeps one product per external id, and '
            '% external ids are used by more than one source', shared USING ERRCODE = 'unique_violation';
    END IF;
END $$;
"""


def downgrade() -> None:
    op.execute(SHARED_IDS)
    op.execute("DROP FUNCTION ynet.more_like_this(text, integer, text, text[], text[], text)")
    op.execute(_revision("0003_search_functions").MORE_LIKE_THIS)
    op.execute(_revision("0007_sql_search_as_python").NEAREST_PRODUCTS)
    op.execute(JOBS_ON_CHANGE_0001)
    op.execute(f"GRANT EXECUTE ON FUNCTION {', '.join(ATTACH_FUNCTIONS)} TO PUBLIC")
    op.execute("COMMENT ON FUNCTION ynet.attached_product_upsert(jsonb, text[]) IS NULL")
    op.execute(_revision("0004_attach_functions").FUNCTIONS.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.execute("ALTER TABLE ynet.products DROP CONSTRAINT uq_products_external_id_source")
    op.execute("ALTER TABLE ynet.products ADD CONSTRAINT uq_products_external_id UNIQUE (external_id)")
    op.execute("ALTER TABLE ynet.products DROP COLUMN source")
