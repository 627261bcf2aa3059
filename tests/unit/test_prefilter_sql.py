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
def test_the_templated_sql_is_the_whole_statement_compiled(
    filters: dict[str, Any] | None, exact: bool, with_vectors: bool
) -> None:
    dialect = PGDialect_psycopg()
    query = np.linspace(-1, 1, 8, dtype=np.float32)
    compiled = CompiledFilters.of(filters)
    for model in (ActiveModel(3, "a@1", 8), ActiveModel(4, "b@1", 8)):  # one template each
        whole = prefilter_statement(model, query, compiled.where, 17, exact=exact, with_vectors=with_vectors).compile(
            dialect=dialect, compile_kwargs={"render_postcompile": True}
        )
        sql, params = prefilter_sql(dialect, model, query, compiled, 17, exact=exact, with_vectors=with_vectors)
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
