"""The nearest-neighbour policy, defined once for every search path
(docs/design.md#5-filtered-search-returns-the-rows-that-exist).

pgvector applies a filter after its HNSW index scan, so a selective filter returns too few rows unless
the search is told otherwise. The policy, in order:
1. a filter matching at most `EXACT_BELOW` products is answered by exact search (counted on `products`
   alone, through its indexes);
2. anything else asks the model's HNSW index, with a search list of `EF_SEARCH` rows and iterative scans
   (`ITERATIVE_SCAN`) that may walk `SCAN_TUPLES` tuples until enough rows pass the filter;
3. an index scan that returns fewer than k rows while more embedded rows match is answered again by
   exact search, so k rows come back whenever k exist.

Python applies it in `ynet_db.search.prefilter` (the search path and `ynet_db.orm.similar_products`);
the SQL function `ynet.nearest_products` is rendered from these values (`ynet_db.search.nearest_sql`)
by migration 0011. A change here needs a migration that installs the rendered function again
(`op.execute(nearest_products_function())`), or backends that search in SQL keep the old policy:
`tests/integration/test_search_sql.py` compares the installed function with the rendering.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scaled:
    """A setting that grows with the rows asked (k): `per_candidate * k`, kept within [minimum, maximum].

    One formula, rendered twice: `value` for Python, `sql` for the PL/pgSQL function."""

    per_candidate: int
    minimum: int
    maximum: int | None = None

    def value(self, k: int) -> int:
        scaled = max(self.per_candidate * k, self.minimum)
        return scaled if self.maximum is None else min(scaled, self.maximum)

    def sql(self, k: str) -> str:
        """The same formula as a SQL expression of the integer expression `k`."""
        scaled = f"greatest({self.per_candidate} * {k}, {self.minimum})"
        return scaled if self.maximum is None else f"least({scaled}, {self.maximum})"


EXACT_BELOW = 20_000
"""A filter matching at most this many products is answered by exact search. Measured at 100,000
1280-d products on 2 cores: exact search over 10,000 matches took 34 ms, while the HNSW scan that
iterates until 256 of its rows pass a 10% filter took 470 ms (it walks ten rows for every one kept)."""

EF_SEARCH = Scaled(per_candidate=3, minimum=40, maximum=1000)
"""`hnsw.ef_search`: three times the rows asked, at least pgvector's default (40), at most its bound (1000).
On generated clustered vectors (bench/search.py, 1280-d), recall of 256 candidates against exact search was
0.90 at 10,000 and 0.97 at 100,000 products with exactly as many, 1.00 and 0.99 with twice. On the model's
own embeddings of street photos (bench/scale.py, 100,000 products), whose similarities are far flatter, twice
gave 0.938 on the test photos; on 300 validation photos (`bench/search_list.py`), twice / three times / four
times (1000) gave 0.940 / 0.969 / 0.982, the prefilter taking 22.8 / 26.3 / 35.2 ms: three times is the least
that clears 0.95 (revision 0014)."""

SCAN_TUPLES = Scaled(per_candidate=100, minimum=20_000)
"""`hnsw.max_scan_tuples`: how far an iterative scan may walk; pgvector's default (20,000), raised by
100 tuples per row asked."""

ITERATIVE_SCAN = "relaxed_order"
"""`hnsw.iterative_scan`: the scan goes on past ef_search until enough rows pass the filter. The order
may be slightly off, so every path sorts the rows by (distance, product id) afterwards."""


def ann_settings(k: int) -> dict[str, object]:
    """The pgvector settings of an index scan for k rows (set with SET LOCAL: they end with the transaction)."""
    return {
        "hnsw.ef_search": EF_SEARCH.value(k),
        "hnsw.iterative_scan": ITERATIVE_SCAN,
        "hnsw.max_scan_tuples": SCAN_TUPLES.value(k),
    }


def ann_settings_sql(k: str) -> dict[str, str]:
    """The same settings as SQL text expressions of the integer expression `k`."""
    return {
        "hnsw.ef_search": f"{EF_SEARCH.sql(k)}::text",
        "hnsw.iterative_scan": f"'{ITERATIVE_SCAN}'",
        "hnsw.max_scan_tuples": f"{SCAN_TUPLES.sql(k)}::text",
    }


def exact_first(matching: int) -> bool:
    """Step 1: a filter that matches `matching` products (counted up to `EXACT_BELOW + 1`) is searched exactly."""
    return matching <= EXACT_BELOW


def exact_again(returned: int, asked: int, embedded: int) -> bool:
    """Step 3: the index scan returned fewer rows than asked while `embedded` (counted up to `asked`) match."""
    return returned < asked and embedded > returned
