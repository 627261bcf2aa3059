"""`ynet.nearest_products` searches as the Python prefilter does (`ynet_db.search.prefilter`).

Revision 0003 wrote the SQL function with the first prefilter's policy. The search benchmark then
changed the Python side, and backends in SQL deserve the same recall and the same rows:
- the HNSW search list holds twice the rows asked (at least 40, at most 1,000): with exactly k, recall
  of 256 candidates at 100,000 products was 0.97, with twice 0.99;
- a filter matching at most 20,000 products is answered by exact search, and the count that decides
  reads `products` alone: a 10% filter at 100,000 products took 470 ms through the iterative index
  scan and 34 ms exactly;
- an index scan that comes back with fewer than k rows while more rows match is answered again by
  exact search, so k rows come back whenever k exist.

The rows are gathered into arrays before they are returned, because rows sent with RETURN QUERY could
not be taken back when the index scan comes back short.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NEAREST_PRODUCTS = """
CREATE OR REPLACE FUNCTION ynet.nearest_products(
    query vector,
    k integer DEFAULT 20,
    category text DEFAULT NULL,
    tags_any text[] DEFAULT NULL,
    tags_all text[] DEFAULT NULL,
    exclude_product integer DEFAULT NULL
) RETURNS TABLE (product_id integer, external_id text, distance double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    exact_below constant integer := 20000;  -- ynet_db.search.prefilter.EXACT_BELOW
    m record;
    filtered boolean := category IS NOT NULL OR tags_any IS NOT NULL OR tags_all IS NOT NULL;
    exact boolean := false;
    embedded integer;
    ids integer[];
    names text[];
    distances double precision[];
    old_ef text;
    old_iterative text;
    old_tuples text;
    -- $1 query, $2 category, $3 tags_any, $4 tags_all, $5 exclude_product, $6 k
    conditions constant text := '($2::text IS NULL OR p.category = $2)'
        ' AND ($3::text[] IS NULL OR p.tags && $3) AND ($4::text[] IS NULL OR p.tags @> $4)'
        ' AND ($5::integer IS NULL OR p.id <> $5)';
    -- %1$s the distance's stored side, %2$s the model id; relaxed_order may return rows slightly out
    -- of order, so the outer query sorts them (ties by id, as the Python prefilter breaks them).
    nearest constant text := 'SELECT array_agg(s.id ORDER BY s.distance, s.id),'
        ' array_agg(s.external_id ORDER BY s.distance, s.id), array_agg(s.distance ORDER BY s.distance, s.id)'
        ' FROM (SELECT p.id, p.external_id, (%1$s <=> $1)::double precision AS distance'
        ' FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id'
        ' WHERE e.model_id = %2$s AND ' || conditions || ' ORDER BY %1$s <=> $1 LIMIT $6) s';
BEGIN
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT id, version, embedding_dim INTO m FROM ynet.models WHERE state = 'active';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no model is active: run `ynet-db model activate NAME` once its embeddings exist'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF vector_dims(query) <> m.embedding_dim THEN
        RAISE EXCEPTION 'the query has % dimensions, the active model % stores %',
            vector_dims(query), m.version, m.embedding_dim USING ERRCODE = 'data_exception';
    END IF;
    IF filtered THEN
        EXECUTE 'SELECT count(*) <= $7 FROM (SELECT 1 FROM ynet.products p WHERE ' || conditions || ' LIMIT $7 + 1) s'
           INTO exact USING query, category, tags_any, tags_all, exclude_product, k, exact_below;
    END IF;
    IF NOT exact THEN
        -- Read only now: pgvector defines its settings when its library loads (vector_dims above did).
        old_ef := current_setting('hnsw.ef_search');
        old_iterative := current_setting('hnsw.iterative_scan');
        old_tuples := current_setting('hnsw.max_scan_tuples');
        PERFORM set_config('hnsw.ef_search', least(greatest(2 * k, 40), 1000)::text, true);
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
        PERFORM set_config('hnsw.max_scan_tuples', greatest(20000, 100 * k)::text, true);
        EXECUTE format(nearest, format('e.embedding::vector(%s)', m.embedding_dim), m.id)
           INTO ids, names, distances USING query, category, tags_any, tags_all, exclude_product, k;
        PERFORM set_config('hnsw.ef_search', old_ef, true);
        PERFORM set_config('hnsw.iterative_scan', old_iterative, true);
        PERFORM set_config('hnsw.max_scan_tuples', old_tuples, true);
        IF coalesce(cardinality(ids), 0) < k THEN
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM ynet.embeddings e JOIN ynet.products p'
                           ' ON p.id = e.product_id WHERE e.model_id = %s AND ' || conditions || ' LIMIT $6) s', m.id)
               INTO embedded USING query, category, tags_any, tags_all, exclude_product, k;
            exact := embedded > coalesce(cardinality(ids), 0);
        END IF;
    END IF;
    IF exact THEN
        -- `e.embedding` has no index: an exact scan of the matching rows.
        EXECUTE format(nearest, 'e.embedding', m.id)
           INTO ids, names, distances USING query, category, tags_any, tags_all, exclude_product, k;
    END IF;
    RETURN QUERY SELECT * FROM unnest(ids, names, distances);
END $$;
COMMENT ON FUNCTION ynet.nearest_products(vector, integer, text, text[], text[], integer) IS
    'The k products nearest to a query vector under the active model (cosine distance), filtered by '
    'category, any of tags_any, all of tags_all; exact search when the filter matches <= 20000 products '
    'or the index scan finds fewer than k of the rows that match.';
"""


def upgrade() -> None:
    op.execute(NEAREST_PRODUCTS)


def downgrade() -> None:
    search_functions = import_module("ynet_db.migrations.versions.0003_search_functions")
    op.execute(search_functions.NEAREST_PRODUCTS.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
