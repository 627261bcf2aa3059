"""Search filters: an allow-list of fields and operators compiled to SQLAlchemy expressions.

A filter is a mapping from field to either a value (equality) or `{operator: value}`:

    {"category": "dress"}
    {"category": {"in": ["dress", "skirt"]}, "tags": {"any": ["color:red"], "all": ["sleeve:long"]}}
    {"external_id": {"in": ["sku-1", "sku-2"]}, "price": {"gte": 10, "lt": 50}, "in_stock": True}

Every value becomes a bound parameter (docs/design.md#7-inputs-are-untrusted); nothing the caller writes reaches the SQL
text, so a field or operator outside the allow-list is an error, never a column name. The tags
operators are the array operators the GIN index on `products.tags` serves (`&&` and `@>`).

Extension point: a `FilterSchema` is a frozen field table. The shop's own attached columns become
filterable by `DEFAULT_SCHEMA.with_field(name, Field(column, ops))`, without touching this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_, true

from ynet_db.db.tables import Product

MAX_K = 200
MAX_CANDIDATES = 1000
MAX_STRING = 200
"""Characters in one filter string (tags and ids are short; a longer one is a mistake or an attack)."""
MAX_LIST = 1000
"""Items in one list value (e.g. external ids)."""


class FilterError(ValueError):
    """A filter or a query bound that ynet-db refuses; the message names the field and the rule."""


Value = Any
Operator = Callable[[Any, Value], ColumnElement[bool]]
Check = Callable[[str, Value], Value]


def text_value(name: str, value: Value) -> str:
    if not isinstance(value, str):
        raise FilterError(f"filter {name!r}: expected a string, got {type(value).__name__}")
    if "\x00" in value:
        raise FilterError(f"filter {name!r}: strings may not contain NUL bytes")
    if len(value) > MAX_STRING:
        raise FilterError(f"filter {name!r}: strings are at most {MAX_STRING} characters, got {len(value)}")
    return value


def text_list(name: str, value: Value) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise FilterError(f"filter {name!r}: expected a list of strings, got {type(value).__name__}")
    if not value:
        raise FilterError(f"filter {name!r}: the list is empty")
    if len(value) > MAX_LIST:
        raise FilterError(f"filter {name!r}: lists have at most {MAX_LIST} items, got {len(value)}")
    return [text_value(name, item) for item in value]


def number_value(name: str, value: Value) -> Decimal | int | float:
    # bool is an int in Python; a price of True is a bug in the caller.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise FilterError(f"filter {name!r}: expected a number, got {type(value).__name__}")
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        raise FilterError(f"filter {name!r}: expected a finite number, got {value}")
    return value


def bool_value(name: str, value: Value) -> bool:
    if not isinstance(value, bool):
        raise FilterError(f"filter {name!r}: expected true or false, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Op:
    check: Check
    build: Operator


def _in_stock(column: Any, wanted: bool) -> ColumnElement[bool]:
    positive = column > 0
    return positive if wanted else or_(column.is_(None), not_(positive))


TEXT_OPS: dict[str, Op] = {
    "eq": Op(text_value, lambda c, v: c == v),
    "in": Op(text_list, lambda c, v: c.in_(v)),
}
TAG_OPS: dict[str, Op] = {
    "any": Op(text_list, lambda c, v: c.overlap(v)),
    "all": Op(text_list, lambda c, v: c.contains(v)),
}
RANGE_OPS: dict[str, Op] = {
    "gte": Op(number_value, lambda c, v: c >= v),
    "gt": Op(number_value, lambda c, v: c > v),
    "lte": Op(number_value, lambda c, v: c <= v),
    "lt": Op(number_value, lambda c, v: c < v),
    "eq": Op(number_value, lambda c, v: c == v),
}
STOCK_OPS: dict[str, Op] = {"eq": Op(bool_value, _in_stock)}


@dataclass(frozen=True)
class Field:
    column: Any
    """A SQLAlchemy column (or column expression) the operators apply to."""
    ops: Mapping[str, Op]
    shorthand: str | None = "eq"
    """The operator a bare value means (`{"category": "dress"}`); None: a bare value is an error."""


@dataclass(frozen=True)
class FilterSchema:
    fields: Mapping[str, Field] = field(default_factory=dict)

    def with_field(self, name: str, spec: Field) -> FilterSchema:
        """A new schema that also allows `name` (e.g. a column of an attached shop table)."""
        return FilterSchema({**self.fields, name: spec})


DEFAULT_SCHEMA = FilterSchema(
    {
        "category": Field(Product.category, TEXT_OPS),
        "external_id": Field(Product.external_id, TEXT_OPS),
        "tags": Field(Product.tags, TAG_OPS, shorthand="any"),
        "price": Field(Product.price, RANGE_OPS),
        "in_stock": Field(Product.stock, STOCK_OPS),
    }
)


@dataclass(frozen=True)
class CompiledFilters:
    """A filter checked and compiled once, at the edge, then handed down (`CompiledFilters.of`)."""

    where: ColumnElement[bool]
    narrows: bool
    """The caller gave conditions: only then may the policy search exactly because few products match."""

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None, schema: FilterSchema = DEFAULT_SCHEMA) -> CompiledFilters:
        return cls(compile_filters(spec, schema), bool(spec))


def compile_filters(spec: Mapping[str, Any] | None, schema: FilterSchema = DEFAULT_SCHEMA) -> ColumnElement[bool]:
    """One boolean expression (AND of every condition) for `select(...).where(...)`; TRUE when empty."""
    if spec is None:
        return true()
    if not isinstance(spec, Mapping):
        raise FilterError(f"filters must be a mapping of field to condition, got {type(spec).__name__}")
    parts = [cond for name, condition in spec.items() for cond in _field_conditions(schema, name, condition)]
    return and_(true(), *parts) if parts else true()


def _field_conditions(schema: FilterSchema, name: Any, condition: Any) -> list[ColumnElement[bool]]:
    if not isinstance(name, str) or name not in schema.fields:
        allowed = ", ".join(sorted(schema.fields))
        raise FilterError(f"unknown filter field {_shown(name)}; allowed: {allowed}")
    spec = schema.fields[name]
    if not isinstance(condition, Mapping):
        if spec.shorthand is None:
            raise FilterError(f"filter {name!r}: give an operator, one of {', '.join(sorted(spec.ops))}")
        condition = {spec.shorthand: condition}
    if not condition:
        raise FilterError(f"filter {name!r}: no operator given")
    return [_operator(spec, name, op, value)(spec.column) for op, value in condition.items()]


def _operator(spec: Field, name: str, op: Any, value: Any) -> Callable[[Any], ColumnElement[bool]]:
    if not isinstance(op, str) or op not in spec.ops:
        raise FilterError(f"filter {name!r} has no operator {_shown(op)}; allowed: {', '.join(sorted(spec.ops))}")
    checked = spec.ops[op].check(name, value)
    return lambda column: spec.ops[op].build(column, checked)


def _shown(name: Any) -> str:
    """A caller's name in an error message, cut short: messages end up in logs."""
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."


def bounded(name: str, value: Any, maximum: int) -> int:
    """k and candidate counts: whole numbers from 1 to `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FilterError(f"{name} must be a whole number, got {type(value).__name__}")
    if not 1 <= value <= maximum:
        raise FilterError(f"{name} must be between 1 and {maximum}, got {value}")
    return value
