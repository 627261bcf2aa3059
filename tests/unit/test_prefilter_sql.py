"""The prefilter's SQL is compiled once per model and path, and only the filter per search
(`ynet_db.search.prefilter.prefilter_sql`): it must be exactly the statement compiled whole."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from ynet_db.search.filters import CompiledFilters
from ynet_db.search.prefilter import ActiveModel, prefilter_sql, prefilter_statement

FILTERS: list[dict[str, Any] | None] = [
    None,
    {"category": "dress"},
    {"category": {"in": ["dress", "skirt"]}, "tags": {"any": ["color:red"], "all": ["sleeve:long", "x' OR 1=1"]}},
    {"external_id": {"in": ["sku-1", "sku-2", "sku-3"]}, "price": {"gte": 10, "lt": 50.5}, "in_stock": True},
    {"in_stock": False, "price": {"eq": 3}},
]


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("with_vectors", [False, True])
@pytest.mark.parametrize("element", ["vector", "halfvec"])
def test_the_templated_sql_is_the_whole_statement_compiled(
    filters: dict[str, Any] | None, exact: bool, with_vectors: bool, element: str
) -> None:
    dialect = PGDialect_psycopg()
    query = np.linspace(-1, 1, 8, dtype=np.float32)
    compiled = CompiledFilters.of(filters)
    for model in (ActiveModel(3, "a@1", 8), ActiveModel(4, "b@1", 8)):  # one template each
        options: dict[str, Any] = {"exact": exact, "with_vectors": with_vectors, "element": element}
        whole = prefilter_statement(model, query, compiled.where, 17, **options).compile(
            dialect=dialect, compile_kwargs={"render_postcompile": True}
        )
        sql, params = prefilter_sql(dialect, model, query, compiled, 17, **options)
        assert tokens(sql) == tokens(str(whole))
        assert params == whole.params
        assert f"model_id = {model.id}" in sql


def tokens(sql: str) -> list[str]:
    """SQL as its words, without the parentheses and the `AND true` that tell the template from the whole
    statement: the template puts the filter in parentheses of its own, where SQLAlchemy flattens the AND and
    drops an empty filter's TRUE."""
    words = sql.replace("(", " ").replace(")", " ").split()
    kept: list[str] = []
    for word in words:
        if word == "true" and kept[-1:] == ["AND"]:
            kept.pop()
        else:
            kept.append(word)
    return kept


def test_a_halfvec_index_is_asked_in_halfvec_and_the_distances_are_the_full_vectors() -> None:
    dialect = PGDialect_psycopg()
    model, query, compiled = ActiveModel(3, "a@1", 8), np.ones(8, np.float32), CompiledFilters.of(None)
    sql, _ = prefilter_sql(dialect, model, query, compiled, 17, exact=False, with_vectors=False, element="halfvec")
    select_list, order = sql.split("ORDER BY")
    assert "CAST(ynet.embeddings.embedding AS HALFVEC(8)) <=> CAST(%(query)s::VARCHAR AS HALFVEC(8))" in order
    assert "ynet.embeddings.embedding <=> CAST(%(query)s::VARCHAR AS VECTOR(8)) AS distance" in select_list
    vector, _ = prefilter_sql(dialect, model, query, compiled, 17, exact=False, with_vectors=False, element="vector")
    assert "HALFVEC" not in vector and "CAST(ynet.embeddings.embedding AS VECTOR(8)) <=>" in vector.split("ORDER BY")[1]
