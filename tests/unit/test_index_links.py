"""The size rule for a model index's HNSW links and element type, and their bounds (no database: the SQL renderings are
compared with these in tests/integration/test_index_rebuild.py)."""

from __future__ import annotations

import pytest

from ynet_db.search.index_links import BY_SIZE, DENSE, PGVECTOR_DEFAULTS, Links, LinksError, SizeRule


def test_the_defaults_up_to_a_few_hundred_thousand_rows_the_denser_halfvec_graph_at_a_million() -> None:
    assert [BY_SIZE.links(rows) for rows in (0, 10_000, 100_000, 299_999)] == [PGVECTOR_DEFAULTS] * 4
    assert [BY_SIZE.links(rows) for rows in (300_000, 1_000_000, 10**8)] == [DENSE] * 3
    assert (PGVECTOR_DEFAULTS, DENSE) == (Links(16, 64, "vector"), Links(32, 128, "halfvec"))


def test_the_rules_sql_has_the_same_steps() -> None:
    assert SizeRule(dense_from=500).sql("n") == (
        "CASE WHEN n >= 500 THEN 32 ELSE 16 END",
        "CASE WHEN n >= 500 THEN 128 ELSE 64 END",
        "CASE WHEN n >= 500 THEN 'halfvec' ELSE 'vector' END",
    )


@pytest.mark.parametrize(
    ("m", "ef_construction", "message"),
    [
        (1, 64, "m must be between 2 and 100, got 1"),
        (101, 400, "m must be between 2 and 100, got 101"),
        (40, 64, r"ef_construction must be between 2 \* m \(80\) and 1000, got 64"),
        (16, 1001, r"ef_construction must be between 2 \* m \(32\) and 1000, got 1001"),
    ],
)
def test_links_pgvector_would_refuse_cannot_be_made(m: int, ef_construction: int, message: str) -> None:
    with pytest.raises(LinksError, match=message):
        Links(m, ef_construction)


def test_only_the_element_types_pgvector_indexes_can_be_made() -> None:
    with pytest.raises(LinksError, match="the element type must be one of vector, halfvec, got bit"):
        Links(16, 64, "bit")


def test_an_index_built_without_options_has_pgvectors_defaults() -> None:
    assert Links.from_catalog(None, "vector") == PGVECTOR_DEFAULTS
    assert Links.from_catalog(["m=32"], "vector") == Links(32, 64)
    assert Links.from_catalog(["m=32", "ef_construction=128"], "halfvec") == DENSE


def test_a_denser_index_covers_a_sparser_choice_and_not_the_other_way() -> None:
    assert DENSE.covers(PGVECTOR_DEFAULTS) and DENSE.covers(DENSE)
    assert not PGVECTOR_DEFAULTS.covers(DENSE)
    assert not Links(32, 64).covers(Links(16, 128)), "both parameters count"
    assert str(DENSE) == "m 32, ef_construction 128, halfvec"


def test_a_halfvec_index_covers_a_vector_choice_and_not_the_other_way() -> None:
    assert Links(16, 64, "halfvec").covers(Links(16, 64, "vector"))
    assert not Links(32, 128, "vector").covers(DENSE), "a large catalogue's index stores halfvec"
