"""The SQL functions that define a model's HNSW index, rendered from `ynet_db.search.index_links` and
installed by migrations (revision 0012 is the first, 0015 added the element type):

- `ynet.model_index_links(embedded)`: the size rule (`index_links.BY_SIZE`): links and element type;
- `ynet.model_index_definition(model, m, ef_construction, index_name, concurrent, element)`: the one CREATE
  INDEX statement of a model's index (the expression and predicate the search path's statement matches,
  `ynet_db.search.prefilter.distance_to`), links checked, missing ones chosen by the rule from the model's
  embedded rows;
- `ynet.build_model_index(model, m, ef_construction, element)`: drops and builds the index in the caller's
  transaction (the trigger that registers a model calls it; it blocks writes while it runs). The
  concurrent rebuild (`ynet_db.search.model_index`) runs the definition itself, outside any transaction.

A change to the rule or the bounds reaches SQL only through a new migration that installs
`index_functions()` again; `tests/integration/test_index_rebuild.py` compares what is installed with it.
"""

from __future__ import annotations

from ynet_db.search import index_links
from ynet_db.search.index_links import SizeRule

LINKS_SIGNATURE = "ynet.model_index_links(bigint)"
DEFINITION_SIGNATURE = "ynet.model_index_definition(integer, integer, integer, text, boolean, text)"
BUILD_SIGNATURE = "ynet.build_model_index(integer, integer, integer, text)"


def links_body(rule: SizeRule) -> str:
    m, ef_construction, element = rule.sql("embedded")
    return f" SELECT {m}, {ef_construction}, {element} "


def definition_body() -> str:
    """The PL/pgSQL body of `ynet.model_index_definition` (what `pg_proc.prosrc` holds once installed)."""
    return f"""
DECLARE
    dim integer := (SELECT embedding_dim FROM ynet.models WHERE id = model);
    chosen record;
BEGIN
    IF dim IS NULL THEN
        RAISE EXCEPTION 'no model with id %', model USING ERRCODE = 'no_data_found';
    END IF;
    IF m IS NULL OR ef_construction IS NULL OR element IS NULL THEN
        chosen := ynet.model_index_links((SELECT count(*) FROM ynet.embeddings e WHERE e.model_id = model));
        m := coalesce(m, chosen.m);
        ef_construction := coalesce(ef_construction, chosen.ef_construction);
        element := coalesce(element, chosen.element);
    END IF;
    {index_links.check_sql("m", "ef_construction", "element")}
    -- element is one of the checked type names, so it is written in as it is
    RETURN format(
        'CREATE INDEX %s%I ON ynet.embeddings USING hnsw ((embedding::%s(%s)) %s_cosine_ops) '
        'WITH (m = %s, ef_construction = %s) WHERE model_id = %s',
        CASE WHEN concurrent THEN 'CONCURRENTLY ' ELSE '' END,
        coalesce(index_name, ynet.model_index_name(model)), element, dim, element, m, ef_construction, model);
END """


def index_functions(rule: SizeRule = index_links.BY_SIZE) -> str:
    """CREATE OR REPLACE the three functions with `rule`, and their comments (`DROP_FUNCTIONS` first where
    an older rendering with other signatures is installed)."""
    return f"""
CREATE OR REPLACE FUNCTION ynet.model_index_links(
    embedded bigint, OUT m integer, OUT ef_construction integer, OUT element text
) LANGUAGE sql IMMUTABLE AS $${links_body(rule)}$$;
COMMENT ON FUNCTION {LINKS_SIGNATURE} IS
    'The HNSW links and element type a model index with this many embedded rows is built with: {rule.small} '
    'below {rule.dense_from} rows, {rule.large} from there (ynet_db.search.index_links).';
CREATE OR REPLACE FUNCTION ynet.model_index_definition(
    model integer,
    m integer DEFAULT NULL,
    ef_construction integer DEFAULT NULL,
    index_name text DEFAULT NULL,
    concurrent boolean DEFAULT false,
    element text DEFAULT NULL
) RETURNS text LANGUAGE plpgsql STABLE AS $${definition_body()}$$;
COMMENT ON FUNCTION {DEFINITION_SIGNATURE} IS
    'The CREATE INDEX statement of a model''s HNSW index (named ynet.model_index_name(model) unless named); '
    'links and element type left NULL are chosen by ynet.model_index_links from the model''s embedded rows.';
CREATE OR REPLACE FUNCTION ynet.build_model_index(model integer, m integer DEFAULT NULL,
                                                  ef_construction integer DEFAULT NULL, element text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    -- First, so that a call with bad links drops nothing.
    statement constant text := ynet.model_index_definition(model, m, ef_construction, NULL, false, element);
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS ynet.%I', ynet.model_index_name(model));
    EXECUTE statement;
END $$;
COMMENT ON FUNCTION {BUILD_SIGNATURE} IS
    '(Re)builds one model''s HNSW index in this transaction, blocking writes to ynet.embeddings while it '
    'runs; links and element type left NULL are chosen from its embedded rows. `ynet-db index rebuild` '
    'builds concurrently.';
"""


DROP_FUNCTIONS = "; ".join(f"DROP FUNCTION {s}" for s in (BUILD_SIGNATURE, DEFINITION_SIGNATURE, LINKS_SIGNATURE))
