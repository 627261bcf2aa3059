"""The graph a model's HNSW index is built with (`m` links per node, `ef_construction`), chosen from the
number of rows the model has embedded when the index is built.

The links trade recall at scale against the cost of every insert (migration 0006's docstring, the search
benchmark's `bench/results/search-1280.json` and `search-1m-256.json`, README "Search"):
- pgvector's defaults (m 16, ef_construction 64) gave recall of the 256 candidates 1.000 at 10,000 and
  0.991 at 100,000 1280-d products, and 0.85 at 1,000,000 (256-d): for 3 queries in 30 the graph search
  never reached the query's cluster, whatever the search list. Those were generated clustered vectors; on
  the model's own embeddings of street photos at 100,000 products the defaults kept 0.940 with the search
  list of 512 and 0.969 with 768, which the policy now uses (`policy.EF_SEARCH`; m 32 / ef_construction 128
  kept 0.983 with 512, for 2.4 times the build and a slower search, 31.6 against 26.3 ms;
  `bench/search_list.py`);
- m 32 / ef_construction 128 gave 0.976 at 1,000,000, for 2.5 times the build time (510 s), and every
  insert costs about three times as much (a worker's batch of 16 1280-d embeddings: 293 ms instead of
  102 ms; one worker's pipeline fell from 0.81 to 0.59 of the encoder alone).
So an index keeps the cheap defaults up to `DENSE_FROM` rows and takes the denser graph from there.

The element type the index stores follows the same rule: `vector` (4 bytes an element) below `DENSE_FROM`,
`halfvec` (2 bytes) from there. The table keeps the full vectors either way (the re-rank reads them, and the
distances a search returns are computed from them); only the graph's copy is halved. At 100,000 products of
the model's own embeddings the `halfvec` index (410 MB against 819) kept the same recall of the 256
candidates (0.968) and searched as fast (24.2 against 25.7 ms; `bench/results/scale-100000.json`); at a
million, where the `vector` index outgrows the memory a search server caches, see README "Scale". The
search follows whichever element type the model's index has (`ynet_db.search.prefilter`), so an index
converted by a concurrent rebuild serves searches from the moment it is swapped in.
Between the last size where the defaults were measured good (100,000) and the first where they failed
(1,000,000) nothing was measured: 300,000 lies near the middle on a log scale (316,000), and is a
choice, not a measurement.

One definition, two renderings (as `policy.py` renders its settings): `SizeRule.links` for Python (the
rebuild, the status warning) and `SizeRule.sql` for `ynet.model_index_links`, which
`ynet.build_model_index` calls (`ynet_db.search.index_sql`, migration 0012). A change here ships with a
migration that installs `index_sql.index_functions()` again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VECTOR, HALFVEC = "vector", "halfvec"
ELEMENTS = (VECTOR, HALFVEC)
"""The element types an index may store: pgvector's `vector` and `halfvec`, each with its `<type>_cosine_ops`."""

M_MIN, M_MAX = 2, 100
"""pgvector's bounds on m."""
EF_CONSTRUCTION_MAX = 1000
"""pgvector's upper bound on ef_construction; the lower one is 2 * m."""


class LinksError(ValueError):
    """Links pgvector would refuse; the message names the value and its bounds."""


def links_problem(m: int, ef_construction: int, element: str = VECTOR) -> str | None:
    """What is wrong with these links (pgvector's own bounds, an element type it indexes), or None."""
    if element not in ELEMENTS:
        return f"the element type must be one of {', '.join(ELEMENTS)}, got {element}"
    if not M_MIN <= m <= M_MAX:
        return f"m must be between {M_MIN} and {M_MAX}, got {m}"
    if not 2 * m <= ef_construction <= EF_CONSTRUCTION_MAX:
        return f"ef_construction must be between 2 * m ({2 * m}) and {EF_CONSTRUCTION_MAX}, got {ef_construction}"
    return None


def check_sql(m: str, ef_construction: str, element: str) -> str:
    """`links_problem` as PL/pgSQL statements on the integer variables `m` and `ef_construction` and the text
    variable `element`: the same bounds and texts, raised as invalid_parameter_value."""
    elements = ", ".join(f"'{e}'" for e in ELEMENTS)
    return f"""IF {element} IS NULL OR {element} NOT IN ({elements}) THEN
        RAISE EXCEPTION 'the element type must be one of {", ".join(ELEMENTS)}, got %', {element}
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF {m} IS NULL OR {m} NOT BETWEEN {M_MIN} AND {M_MAX} THEN
        RAISE EXCEPTION 'm must be between {M_MIN} and {M_MAX}, got %', {m} USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF {ef_construction} IS NULL OR {ef_construction} NOT BETWEEN 2 * {m} AND {EF_CONSTRUCTION_MAX} THEN
        RAISE EXCEPTION 'ef_construction must be between 2 * m (%) and {EF_CONSTRUCTION_MAX}, got %',
            2 * {m}, {ef_construction} USING ERRCODE = 'invalid_parameter_value';
    END IF;"""


@dataclass(frozen=True)
class Links:
    """An HNSW index's build parameters: its graph's links and the element type it stores; only ones pgvector
    accepts can be made."""

    m: int
    ef_construction: int
    element: str = VECTOR

    def __post_init__(self) -> None:
        problem = links_problem(self.m, self.ef_construction, self.element)
        if problem:
            raise LinksError(problem)

    def covers(self, other: Links) -> bool:
        """At least as dense as `other` in both parameters, and no larger: a `halfvec` index covers a `vector`
        one (the same recall, measured), never the other way round."""
        smaller = self.element == other.element or self.element == HALFVEC
        return self.m >= other.m and self.ef_construction >= other.ef_construction and smaller

    @classmethod
    def from_catalog(cls, options: Sequence[str] | None, element: str) -> Links:
        """The links of an index from `pg_class.reloptions` (`['m=32', 'ef_construction=128']`) and the type its
        operator class indexes; an option the index was built without has pgvector's default."""
        given = dict(option.split("=", 1) for option in options or ())
        return cls(
            int(given.get("m", PGVECTOR_DEFAULTS.m)),
            int(given.get("ef_construction", PGVECTOR_DEFAULTS.ef_construction)),
            element,
        )

    def __str__(self) -> str:
        return f"m {self.m}, ef_construction {self.ef_construction}, {self.element}"


PGVECTOR_DEFAULTS = Links(16, 64)
DENSE = Links(32, 128, HALFVEC)
DENSE_FROM = 300_000


@dataclass(frozen=True)
class SizeRule:
    """`small` links below `dense_from` embedded rows, `large` from there on."""

    dense_from: int
    small: Links = PGVECTOR_DEFAULTS
    large: Links = DENSE

    def links(self, rows: int) -> Links:
        return self.large if rows >= self.dense_from else self.small

    def sql(self, rows: str) -> tuple[str, str, str]:
        """The same rule as SQL expressions of the integer expression `rows`: (m, ef_construction, element)."""
        dense = f"{rows} >= {self.dense_from}"
        return (
            f"CASE WHEN {dense} THEN {self.large.m} ELSE {self.small.m} END",
            f"CASE WHEN {dense} THEN {self.large.ef_construction} ELSE {self.small.ef_construction} END",
            f"CASE WHEN {dense} THEN '{self.large.element}' ELSE '{self.small.element}' END",
        )


BY_SIZE = SizeRule(DENSE_FROM)
"""The rule every index build follows unless links are asked for."""
