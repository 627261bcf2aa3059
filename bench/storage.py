"""The storage choices the scale benchmark compares, as the benchmark's own SQL (not the product's):
one HNSW index each on the same `ynet.embeddings` rows, searched for the 256 candidates.

    vector    embedding::vector(d), cosine
    halfvec   embedding::halfvec(d), cosine: half the bytes per element in the index
              (one of the two is the model's own index as shipped, `ynet.build_model_index`, by the size rule:
              `shipped` names it; the benchmark builds the other beside it)
    bit       binary_quantize(embedding)::bit(d), Hamming: one bit per element; the index returns
              `overfetch` x 256 rows and the full vectors in the table re-rank them to 256
    bit-centred  the same of (embedding - the catalogue's mean vector): binary_quantize keeps the sign of
              each element, and the default model's elements are all positive (average-pooled activations),
              so without centring every vector quantizes to the same bits

The table keeps the full vectors in every case (the re-rank and CtxYNet read them); only the index
differs. Every search runs with the policy's settings for the rows its index scan asks
(`ynet_db.search.policy.ann_settings`: ef_search, iterative scans, max_scan_tuples).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from ynet_db.db.vectors import vector_text
from ynet_db.search import policy
from ynet_db.search.prefilter import CUSTOM_PLANS, set_local


@dataclass(frozen=True)
class Storage:
    name: str
    expression: str
    """The indexed expression, of `embedding` and the dimension {d}."""
    opclass: str
    operator: str
    query: str
    """The query vector as the index compares it, of the bound text `:q` and {d}."""
    index_prefix: str
    """The index is `<index_prefix>_<model id>`."""
    overfetch: int = 1
    """Rows the index scan returns per candidate; more than 1: re-ranked by the full vectors."""

    @property
    def label(self) -> str:
        return self.name if self.overfetch == 1 else f"{self.name}-x{self.overfetch}"

    def index_name(self, model_id: int) -> str:
        return f"{self.index_prefix}_{model_id}"

    def create_index(self, model_id: int, dim: int, m: int, ef_construction: int) -> str:
        expression = self.expression.format(d=dim)
        return (
            f"CREATE INDEX {self.index_name(model_id)} ON ynet.embeddings USING hnsw (({expression}) {self.opclass}) "
            f"WITH (m = {m}, ef_construction = {ef_construction}) WHERE model_id = {model_id}"
        )

    def search(self, model_id: int, dim: int, candidates: int) -> str:
        """product_id of the `candidates` nearest rows (ties by id), the bound query vector as text `:q`."""
        order = f"{self.expression} {self.operator} {self.query}".format(d=dim)
        scan = (
            f"SELECT product_id, embedding FROM ynet.embeddings WHERE model_id = {model_id} "
            f"ORDER BY {order} LIMIT {candidates * self.overfetch}"
        )
        full = f"embedding::vector({dim}) <=> CAST(:q AS vector({dim}))"
        return f"SELECT product_id FROM ({scan}) scanned ORDER BY {full}, product_id LIMIT {candidates}"


VECTOR = Storage(
    "vector", "embedding::vector({d})", "vector_cosine_ops", "<=>", "CAST(:q AS vector({d}))", "bench_vector"
)
HALFVEC = Storage(
    "halfvec", "embedding::halfvec({d})", "halfvec_cosine_ops", "<=>", "CAST(:q AS halfvec({d}))", "bench_halfvec"
)


def shipped(storage: Storage) -> Storage:
    """The storage as the model's own index (ynet.model_index_name), which ynet.build_model_index built."""
    return replace(storage, index_prefix="embeddings_hnsw_model")


BIT = Storage(
    "bit",
    "binary_quantize(embedding)::bit({d})",
    "bit_hamming_ops",
    "<~>",
    "binary_quantize(CAST(:q AS vector({d})))::bit({d})",
    "bench_bit",
)


def nearest(engine: Engine, storage: Storage, model_id: int, query: np.ndarray, candidates: int) -> list[int]:
    """The storage's candidates for one query, in a transaction of its own with the policy's settings."""
    statement = text(storage.search(model_id, len(query), candidates))
    with engine.begin() as conn:
        set_local(conn, CUSTOM_PLANS | policy.ann_settings(candidates * storage.overfetch))
        return [row[0] for row in conn.execute(statement, {"q": vector_text(query)})]


def inspect(engine: Engine, storage: Storage, model_id: int, query: np.ndarray, candidates: int) -> dict[str, Any]:
    """Whether the planner answers the storage's search with its own index (EXPLAIN), and how many rows
    its index scan really returns to the re-rank (at most `overfetch` x `candidates`)."""
    search = storage.search(model_id, len(query), candidates)
    scan = search[search.index("(") + 1 : search.rindex(") scanned")]
    with engine.begin() as conn:
        set_local(conn, CUSTOM_PLANS | policy.ann_settings(candidates * storage.overfetch))
        plan = "\n".join(row[0] for row in conn.execute(text("EXPLAIN " + search), {"q": vector_text(query)}))
        scanned = conn.execute(text(f"SELECT count(*) FROM ({scan}) s"), {"q": vector_text(query)}).scalar_one()
    return {"index_used": storage.index_name(model_id) in plan, "rows_scanned": scanned}


def centred_bit(mean: np.ndarray) -> Storage:
    """BIT of the vectors less `mean` (a constant in the index expression, so the query must repeat it)."""
    centre = f"'{vector_text(mean)}'::vector({{d}})"
    return Storage(
        "bit-centred",
        f"binary_quantize(embedding::vector({{d}}) - {centre})::bit({{d}})",
        "bit_hamming_ops",
        "<~>",
        f"binary_quantize(CAST(:q AS vector({{d}})) - {centre})::bit({{d}})",
        "bench_bit_centred",
    )
