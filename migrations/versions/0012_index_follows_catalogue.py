"""A model's HNSW links follow its catalogue's size: `ynet.model_index_links`, `ynet.model_index_definition`,
and `ynet.build_model_index` with links chosen by size unless asked.

Revision 0006 built every index with pgvector's defaults (m 16, ef_construction 64) unless the call named
other links. From this revision on, links left out are chosen from the model's embedded rows by the rule in
`ynet_db.search.index_links` (the defaults below 300,000 rows, m 32 / ef_construction 128 from there; the
measurements are in that module's docstring), rendered into SQL by `ynet_db.search.index_sql`. The CREATE
INDEX statement has one definition, `ynet.model_index_definition`: `ynet.build_model_index` runs it in the
caller's transaction, and `ynet-db index rebuild` runs it CONCURRENTLY beside the old index, then swaps.
A new model's index has no rows to count, so it still gets the defaults.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


LINKS_SIGNATURE = "ynet.model_index_links(bigint)"
DEFINITION_SIGNATURE = "ynet.model_index_definition(integer, integer, integer, text, boolean)"
BUILD_SIGNATURE = "ynet.build_model_index(integer, integer, integer)"

# What `ynet_db.search.index_sql.index_functions()` rendered at this revision, kept as it was: revision 0015
# changed the rendering (the element type), and its downgrade installs this again.
FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION ynet.model_index_links(embedded bigint, OUT m integer, OUT ef_construction integer)
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN embedded >= 300000 THEN 32 ELSE 16 END,
    CASE WHEN embedded >= 300000 THEN 128 ELSE 64 END $$;
COMMENT ON FUNCTION ynet.model_index_links(bigint) IS
    'The HNSW links a model index with this many embedded rows is built with: m 16, ef_construction '
    '64 below 300000 rows, m 32, ef_construction '
    '128 from there (ynet_db.search.index_links).';
CREATE OR REPLACE FUNCTION ynet.model_index_definition(
    model integer,
    m integer DEFAULT NULL,
    ef_construction integer DEFAULT NULL,
    index_name text DEFAULT NULL,
    concurrent boolean DEFAULT false
) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    dim integer := (SELECT embedding_dim FROM ynet.models WHERE id = model);
    chosen record;
BEGIN
    IF dim IS NULL THEN
        RAISE EXCEPTION 'no model with id %', model USING ERRCODE = 'no_data_found';
    END IF;
    IF m IS NULL OR ef_construction IS NULL THEN
        chosen := ynet.model_index_links((SELECT count(*) FROM ynet.embeddings e WHERE e.model_id = model));
        m := coalesce(m, chosen.m);
        ef_construction := coalesce(ef_construction, chosen.ef_construction);
    END IF;
    IF m IS NULL OR m NOT BETWEEN 2 AND 100 THEN
        RAISE EXCEPTION 'm must be between 2 and 100, got %', m USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ef_construction IS NULL OR ef_construction NOT BETWEEN 2 * m AND 1000 THEN
        RAISE EXCEPTION 'ef_construction must be between 2 * m (%) and 1000, got %',
            2 * m, ef_construction USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN format(
        'CREATE INDEX %s%I ON ynet.embeddings USING hnsw ((embedding::vector(%s)) vector_cosine_ops) '
        'WITH (m = %s, ef_construction = %s) WHERE model_id = %s',
        CASE WHEN concurrent THEN 'CONCURRENTLY ' ELSE '' END,
        coalesce(index_name, ynet.model_index_name(model)), dim, m, ef_construction, model);
END $$;
COMMENT ON FUNCTION ynet.model_index_definition(integer, integer, integer, text, boolean) IS
    'The CREATE INDEX statement of a model''s HNSW index (named ynet.model_index_name(model) unless named); '
    'links left NULL are chosen by ynet.model_index_links from the model''s embedded rows.';
CREATE OR REPLACE FUNCTION ynet.build_model_index(model integer, m integer DEFAULT NULL,
                                                  ef_construction integer DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    -- First, so that a call with bad links drops nothing.
    statement constant text := ynet.model_index_definition(model, m, ef_construction);
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS ynet.%I', ynet.model_index_name(model));
    EXECUTE statement;
END $$;
COMMENT ON FUNCTION ynet.build_model_index(integer, integer, integer) IS
    '(Re)builds one model''s HNSW index in this transaction, blocking writes to ynet.embeddings while it '
    'runs; links left NULL are chosen from its embedded rows. `ynet-db index rebuild` builds concurrently.';
"""


def upgrade() -> None:
    # Its defaults change from (16, 64) to NULL, which CREATE OR REPLACE cannot do.
    op.execute(f"DROP FUNCTION {BUILD_SIGNATURE}")
    op.execute(FUNCTIONS)


def downgrade() -> None:
    op.execute(
        f"DROP FUNCTION {BUILD_SIGNATURE}; DROP FUNCTION {DEFINITION_SIGNATURE}; DROP FUNCTION {LINKS_SIGNATURE}"
    )
    op.execute(import_module("ynet_db.migrations.versions.0006_model_index_links").BUILD_MODEL_INDEX)
