"""The nearest-neighbour policy's values, and the SQL function rendered from them (no database)."""

from __future__ import annotations

import pytest

from ynet_db.search import policy
from ynet_db.search.nearest_sql import nearest_products_function


@pytest.mark.parametrize(
    ("k", "ef_search", "scan_tuples"),
    [
        (1, 40, 20_000),
        (13, 40, 20_000),
        (14, 42, 20_000),
        (256, 768, 25_600),
        (334, 1000, 33_400),
        (500, 1000, 50_000),
        (1000, 1000, 100_000),
    ],
)
def test_the_index_settings_grow_with_k_within_pgvectors_bounds(k: int, ef_search: int, scan_tuples: int) -> None:
    assert policy.ann_settings(k) == {
        "hnsw.ef_search": ef_search,
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.max_scan_tuples": scan_tuples,
    }


def test_the_steps_decide_as_documented() -> None:
    assert policy.exact_first(policy.EXACT_BELOW) and not policy.exact_first(policy.EXACT_BELOW + 1)
    assert policy.exact_again(returned=3, asked=10, embedded=4)
    assert not policy.exact_again(returned=3, asked=10, embedded=3), "all that match came back"
    assert not policy.exact_again(returned=10, asked=10, embedded=10)


def test_the_sql_function_is_rendered_from_the_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "EXACT_BELOW", 1234)
    monkeypatch.setattr(policy, "EF_SEARCH", policy.Scaled(3, 50, 900))
    monkeypatch.setattr(policy, "ITERATIVE_SCAN", "strict_order")
    sql = nearest_products_function()
    assert "exclude_product, k, 1234;" in sql and "<= 1234 products" in sql
    assert "set_config('hnsw.ef_search', least(greatest(3 * k, 50), 900)::text, true)" in sql
    assert "set_config('hnsw.iterative_scan', 'strict_order', true)" in sql
    assert "20000;" not in sql and "relaxed_order'" not in sql
