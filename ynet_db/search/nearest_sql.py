"""`ynet.nearest_products`, the policy's SQL form: rendered from `ynet_db.search.policy`, installed by migrations.

    SELECT * FROM ynet.nearest_products('[0.1, ...]'::vector, 20, category => 'dress');

Backends that search in SQL (and `ynet.more_like_this`, which calls it) get the rows the Python prefilter
returns for the same filter: the same steps (`policy`'s docstring), the same settings and thresholds,
ties broken by product id. Its filters are the SQL-friendly subset of `ynet_db.search.filters`
(category, any of tags, all of tags), bound as parameters, never spliced into the statement. pgvector's
settings are restored before the function returns, so a caller's transaction keeps its own.

The rendering is what a migration installs: a change to the policy reaches SQL only through a new
migration that installs `nearest_products_function()` again (revision 0011 is the first).
"""

from __future__ import annotations

from ynet_db.search import policy
from ynet_db.search.filters import MAX_CANDIDATES
from ynet_db.search.model_index import serving_element_sql

SIGNATURE = "ynet.nearest_products(vector, integer, text, text[], text[], integer)"


def _save_settings() -> str:
    names = list(policy.ann_settings_sql("k"))
    return "saved := ARRAY[" + ", ".join(f"current_setting('{name}')" for name in names) + "];"


def _set_settings() -> str:
    return "\n        ".join(
        f"PERFORM set_config('{name}', {value}, true);" for name, value in policy.ann_settings_sql("k").items()
    )


def _restore_settings() -> str:
    names = ", ".join(f"'{name}'" for name in policy.ann_settings_sql("k"))
    return f"PERFORM set_config(s.name, s.value, true) FROM unnest(ARRAY[{names}], saved) AS s(name, value);"


def function_body() -> str:
    """The PL/pgSQL body (what `pg_proc.prosrc` holds once installed)."""
    return f"""
DECLARE
    m record;
    element text;
    filtered boolean := category IS NOT NULL OR tags_any IS NOT NULL OR tags_all IS NOT NULL;
    exact boolean := false;
    embedded integer;
    ids integer[];
    names text[];
    distances double precision[];
    saved text[];
    -- $1 query, $2 category, $3 tags_any, $4 tags_all, $5 exclude_product, $6 k
    conditions constant text := '($2::text IS NULL OR p.category = $2)'
        ' AND ($3::text[] IS NULL OR p.tags && $3) AND ($4::text[] IS NULL OR p.tags @> $4)'
        ' AND ($5::integer IS NULL OR p.id <> $5)';
    -- %1$s the order's stored side, %2$s the model id, %3$s the order's query side; the distances are the
    -- full vectors' whatever the order's type. relaxed_order may return rows slightly out of order, so the
    -- outer query sorts them (ties by id, as the Python prefilter breaks them).
    nearest constant text := 'SELECT array_agg(s.id ORDER BY s.distance, s.id),'
        ' array_agg(s.external_id ORDER BY s.distance, s.id), array_agg(s.distance ORDER BY s.distance, s.id)'
        ' FROM (SELECT p.id, p.external_id, (e.embedding <=> $1)::double precision AS distance'
        ' FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id'
        ' WHERE e.model_id = %2$s AND ' || conditions || ' ORDER BY %1$s <=> %3$s LIMIT $6) s';
BEGIN
    IF k IS NULL OR k < 1 OR k > {MAX_CANDIDATES} THEN
        RAISE EXCEPTION 'k must be between 1 and {MAX_CANDIDATES}, got %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF query IS NULL THEN
        RAISE EXCEPTION 'the query vector is NULL' USING ERRCODE = 'null_value_not_allowed';
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
    IF vector_norm(query) = 0 THEN
        RAISE EXCEPTION 'the query vector is all zeros: its cosine distance to every product is undefined'
            USING ERRCODE = 'data_exception';
    END IF;
    IF filtered THEN  -- step 1: a filter matching few products is searched exactly
        EXECUTE 'SELECT count(*) <= $7 FROM (SELECT 1 FROM ynet.products p WHERE ' || conditions || ' LIMIT $7 + 1) s'
           INTO exact USING query, category, tags_any, tags_all, exclude_product, k, {policy.EXACT_BELOW};
    END IF;
    IF NOT exact THEN  -- step 2: the model's HNSW index, asked in the element type it stores
        -- Read only now: pgvector defines its settings when its library loads (vector_dims above did).
        {_save_settings()}
        {_set_settings()}
        element := {serving_element_sql("m.id")};
        EXECUTE format(nearest, format('e.embedding::%s(%s)', element, m.embedding_dim), m.id,
                       format('$1::%s(%s)', element, m.embedding_dim))
           INTO ids, names, distances USING query, category, tags_any, tags_all, exclude_product, k;
        {_restore_settings()}
        IF coalesce(cardinality(ids), 0) < k THEN  -- step 3: short while more rows match
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM ynet.embeddings e JOIN ynet.products p'
                           ' ON p.id = e.product_id WHERE e.model_id = %s AND ' || conditions || ' LIMIT $6) s', m.id)
               INTO embedded USING query, category, tags_any, tags_all, exclude_product, k;
            exact := embedded > coalesce(cardinality(ids), 0);
        END IF;
    END IF;
    IF exact THEN
        -- `e.embedding` has no index: an exact scan of the matching rows.
        EXECUTE format(nearest, 'e.embedding', m.id, '$1')
           INTO ids, names, distances USING query, category, tags_any, tags_all, exclude_product, k;
    END IF;
    RETURN QUERY SELECT * FROM unnest(ids, names, distances);
END """


def nearest_products_function() -> str:
    """CREATE OR REPLACE FUNCTION ynet.nearest_products with the current policy, and its comment."""
    return f"""
CREATE OR REPLACE FUNCTION ynet.nearest_products(
    query vector,
    k integer DEFAULT 20,
    category text DEFAULT NULL,
    tags_any text[] DEFAULT NULL,
    tags_all text[] DEFAULT NULL,
    exclude_product integer DEFAULT NULL
) RETURNS TABLE (product_id integer, external_id text, distance double precision)
LANGUAGE plpgsql VOLATILE AS $${function_body()}$$;
COMMENT ON FUNCTION {SIGNATURE} IS
    'The k products nearest to a query vector under the active model (cosine distance), filtered by '
    'category, any of tags_any, all of tags_all; '
    'exact search when the filter matches <= {policy.EXACT_BELOW} products '
    'or the index scan finds fewer than k of the rows that match (ynet_db.search.policy).';
"""
