"""Search functions for backends that are not in Python: nearest products to a vector, more like this.

    SELECT * FROM ynet.nearest_products('[0.1, ...]'::vector, 20, category => 'dress');
    SELECT * FROM ynet.more_like_this('sku-123', 10, tags_any => ARRAY['color:red']);

Both search the active model's partial HNSW index only. The dynamic SQL interpolates two integers
read from ynet.models (the model's id and dimension) with format('%s'); every argument a caller
passes is a bound parameter (EXECUTE ... USING). The search settings (ef_search, iterative scan) are
set with set_config(..., true) and put back before returning, so they do not outlive the call even
inside the caller's transaction. A filter matching few products is answered by exact search.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NEAREST_PRODUCTS = """
CREATE FUNCTION ynet.nearest_products(
    query vector,
    k integer DEFAULT 20,
    category text DEFAULT NULL,
    tags_any text[] DEFAULT NULL,
    tags_all text[] DEFAULT NULL,
    exclude_product integer DEFAULT NULL
) RETURNS TABLE (product_id integer, external_id text, distance double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m record;
    filtered boolean := category IS NOT NULL OR tags_any IS NOT NULL OR tags_all IS NOT NULL;
    matches integer;
    stored text;
    old_ef text;
    old_iterative text;
    old_tuples text;
    -- $1 query, $2 category, $3 tags_any, $4 tags_all, $5 exclude_product, $6 k
    conditions constant text := ' AND ($2::text IS NULL OR p.category = $2)'
        ' AND ($3::text[] IS NULL OR p.tags && $3) AND ($4::text[] IS NULL OR p.tags @> $4)'
        ' AND ($5::integer IS NULL OR p.id <> $5)';
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
    -- Read only now: pgvector defines its settings when its library loads (vector_dims above did).
    old_ef := current_setting('hnsw.ef_search');
    old_iterative := current_setting('hnsw.iterative_scan');
    old_tuples := current_setting('hnsw.max_scan_tuples');
    IF filtered THEN
        EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM ynet.embeddings e JOIN ynet.products p'
                       ' ON p.id = e.product_id WHERE e.model_id = %s' || conditions || ' LIMIT 2001) s', m.id)
           INTO matches USING query, category, tags_any, tags_all, exclude_product;
    END IF;
    IF filtered AND matches <= 2000 THEN
        stored := 'e.embedding';  -- no index on this expression: an exact scan of the matching rows
    ELSE
        stored := format('e.embedding::vector(%s)', m.embedding_dim);  -- the model's HNSW index
        PERFORM set_config('hnsw.ef_search', greatest(k, 40)::text, true);
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
        PERFORM set_config('hnsw.max_scan_tuples', greatest(20000, 100 * k)::text, true);
    END IF;
    -- relaxed_order may return rows slightly out of order: the outer query sorts them.
    RETURN QUERY EXECUTE format(
        'SELECT s.id, s.external_id, s.distance FROM ('
        ' SELECT p.id, p.external_id, (%1$s <=> $1)::double precision AS distance'
        ' FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id'
        ' WHERE e.model_id = %2$s' || conditions || ' ORDER BY %1$s <=> $1 LIMIT $6'
        ') s ORDER BY s.distance, s.id', stored, m.id)
        USING query, category, tags_any, tags_all, exclude_product, k;
    PERFORM set_config('hnsw.ef_search', old_ef, true);
    PERFORM set_config('hnsw.iterative_scan', old_iterative, true);
    PERFORM set_config('hnsw.max_scan_tuples', old_tuples, true);
END $$;
COMMENT ON FUNCTION ynet.nearest_products(vector, integer, text, text[], text[], integer) IS
    'The k products nearest to a query vector under the active model (cosine distance), filtered by '
    'category, any of tags_any, all of tags_all; exact search when the filter matches <= 2000 products.';
"""

MORE_LIKE_THIS = """
CREATE FUNCTION ynet.more_like_this(
    product text,
    k integer DEFAULT 20,
    category text DEFAULT NULL,
    tags_any text[] DEFAULT NULL,
    tags_all text[] DEFAULT NULL
) RETURNS TABLE (product_id integer, external_id text, distance double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_id integer;
    stored vector;
BEGIN
    SELECT p.id, e.embedding INTO found_id, stored
      FROM ynet.products p
      LEFT JOIN ynet.embeddings e
        ON e.product_id = p.id AND e.model_id = (SELECT id FROM ynet.models WHERE state = 'active')
     WHERE p.external_id = product;
    IF found_id IS NULL THEN
        RAISE EXCEPTION 'no product with external id %', quote_literal(product) USING ERRCODE = 'no_data_found';
    END IF;
    IF stored IS NULL THEN
        RAISE EXCEPTION 'product % has no embedding under the active model yet', quote_literal(product)
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY SELECT * FROM ynet.nearest_products(stored, k, category, tags_any, tags_all, found_id);
END $$;
COMMENT ON FUNCTION ynet.more_like_this(text, integer, text, text[], text[]) IS
    'The k products most like the product with this external id, from its stored embedding under the '
    'active model (the product itself excluded); filters as in ynet.nearest_products.';
"""


def upgrade() -> None:
    op.execute(NEAREST_PRODUCTS)
    op.execute(MORE_LIKE_THIS)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS ynet.more_like_this(text, integer, text, text[], text[])")
    op.execute("DROP FUNCTION IF EXISTS ynet.nearest_products(vector, integer, text, text[], text[], integer)")
