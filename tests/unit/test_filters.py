"""The filter allow-list: what compiles, to which SQL, and the exact refusals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Text, column, select, table
from sqlalchemy.dialects import postgresql

from ynet_db.db.tables import Product
from ynet_db.search.filters import (
    DEFAULT_SCHEMA,
    MAX_STRING,
    TEXT_OPS,
    CompiledFilters,
    Field,
    FilterError,
    bounded,
    compile_filters,
)


def sql(filters: Any, **kwargs: Any) -> str:
    statement = select(Product.id).where(compile_filters(filters, **kwargs))
    return str(statement.compile(dialect=postgresql.dialect()))


def params(filters: Any) -> dict[str, Any]:
    return select(Product.id).where(compile_filters(filters)).compile(dialect=postgresql.dialect()).params


def test_no_filters_is_true() -> None:
    assert sql(None).endswith("WHERE true")
    assert sql({}).endswith("WHERE true")


def test_each_field_compiles_to_its_operator_with_bound_values() -> None:
    text = sql(
        {
            "category": {"in": ["dress", "skirt"]},
            "tags": {"any": ["color:red"], "all": ["sleeve:long", "pattern:dot"]},
            "external_id": "sku-1",
            "price": {"gte": 10, "lt": Decimal("50.5")},
            "in_stock": True,
        }
    )
    assert "ynet.products.category IN (__[POSTCOMPILE_category_1])" in text
    assert "ynet.products.tags && %(tags_1)s::TEXT[]" in text
    assert "ynet.products.tags @> %(tags_2)s::TEXT[]" in text
    assert "ynet.products.external_id = %(external_id_1)s" in text
    assert "ynet.products.price >= %(price_1)s" in text and "ynet.products.price < %(price_2)s" in text
    assert "ynet.products.stock > %(stock_1)s" in text


def test_bare_tags_mean_any_and_out_of_stock_includes_unknown_stock() -> None:
    assert "ynet.products.tags && %(tags_1)s::TEXT[]" in sql({"tags": ["a"]})
    assert "ynet.products.stock IS NULL OR ynet.products.stock <= %(stock_1)s" in sql({"in_stock": False})


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"colour": "red"}, "unknown filter field 'colour'; allowed: category, external_id, in_stock, price, tags"),
        (
            {"category; DROP TABLE ynet.products --": "x"},
            "unknown filter field 'category; DROP TABLE ynet.products --'; "
            "allowed: category, external_id, in_stock, price, tags",
        ),
        ({1: "x"}, "unknown filter field 1; allowed: category, external_id, in_stock, price, tags"),
        ({"tags": {"eq": "a"}}, "filter 'tags' has no operator 'eq'; allowed: all, any"),
        ({"category": {"like": "%"}}, "filter 'category' has no operator 'like'; allowed: eq, in"),
        ({"category": {}}, "filter 'category': no operator given"),
        ({"category": "a\x00b"}, "filter 'category': strings may not contain NUL bytes"),
        ({"tags": {"any": ["ok", "bad\x00"]}}, "filter 'tags': strings may not contain NUL bytes"),
        ({"category": "x" * 201}, f"filter 'category': strings are at most {MAX_STRING} characters, got 201"),
        ({"category": 3}, "filter 'category': expected a string, got int"),
        ({"tags": {"any": "red"}}, "filter 'tags': expected a list of strings, got str"),
        ({"tags": {"all": []}}, "filter 'tags': the list is empty"),
        ({"external_id": {"in": ["x"] * 1001}}, "filter 'external_id': lists have at most 1000 items, got 1001"),
        ({"price": {"gte": "10"}}, "filter 'price': expected a number, got str"),
        ({"price": {"gte": True}}, "filter 'price': expected a number, got bool"),
        ({"price": {"lt": float("nan")}}, "filter 'price': expected a finite number, got nan"),
        ({"in_stock": "yes"}, "filter 'in_stock': expected true or false, got str"),
        ("category = 'x'", "filters must be a mapping of field to condition, got str"),
    ],
)
def test_refusals_name_the_field_and_the_rule(filters: Any, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        compile_filters(filters)
    assert str(raised.value) == message


def test_hostile_values_are_bound_never_in_the_sql() -> None:
    hostile = ["x' OR '1'='1", "a; DROP TABLE ynet.products; --", "-- comment", '"quoted"', "$$ dollar $$"]
    filters = {"category": {"in": hostile}, "tags": {"any": hostile, "all": hostile}, "external_id": hostile[0]}
    text = sql(filters)
    for value in hostile:
        assert value not in text
    compiled = params(filters)
    assert (
        compiled["category_1"] == hostile and compiled["tags_1"] == hostile and compiled["external_id_1"] == hostile[0]
    )


def test_an_attached_column_is_an_extension_of_the_schema_not_of_this_module() -> None:
    shop = table("shop_products", column("brand", Text), schema="shop")
    schema = DEFAULT_SCHEMA.with_field("brand", Field(shop.c.brand, TEXT_OPS))
    assert "shop.shop_products.brand = %(brand_1)s" in sql({"brand": "acme"}, schema=schema)
    with pytest.raises(FilterError):
        compile_filters({"brand": "acme"})  # the default schema is unchanged


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "k must be between 1 and 200, got 0"),
        (10**9, "k must be between 1 and 200, got 1000000000"),
        (True, "k must be a whole number, got bool"),
        ("20", "k must be a whole number, got str"),
    ],
)
def test_k_is_bounded(value: Any, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        bounded("k", value, 200)
    assert str(raised.value) == message
    assert bounded("k", 200, 200) == 200


def test_a_filter_is_compiled_once_with_whether_it_narrows() -> None:
    assert [CompiledFilters.of(spec).narrows for spec in (None, {}, {"category": "dress"})] == [False, False, True]
    assert sql_of_compiled(CompiledFilters.of({"category": "dress"}).where) == sql_of_compiled(
        compile_filters({"category": "dress"})
    )
    with pytest.raises(FilterError, match="unknown filter field 'title'"):
        CompiledFilters.of({"title": "x"})


def sql_of_compiled(where: Any) -> str:
    return str(select(Product.id).where(where).compile(dialect=postgresql.dialect()))
