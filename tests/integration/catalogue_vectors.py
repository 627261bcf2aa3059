"""Test catalogues of generated vectors, written straight into the tables (no images, no jobs).

A model is inserted 'registered' so the triggers record no work, products and embeddings follow,
and only then is the model switched to 'active'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from sqlalchemy import Engine, text

from ynet_db.db.vectors import vector_text


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def add_model(engine: Engine, version: str, dim: int, state: str = "registered") -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                text(
                    "INSERT INTO ynet.models (name, version, embedding_dim, weights_sha256, state) "
                    "VALUES (:name, :version, :dim, :sha, :state) RETURNING id"
                ),
                {"name": version.split("@")[0], "version": version, "dim": dim, "sha": "0" * 64, "state": state},
            ).scalar_one()
        )


def set_state(engine: Engine, model_id: int, state: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE ynet.models SET state = :state WHERE id = :id"), {"state": state, "id": model_id})


def add_products(
    engine: Engine, n: int, tags: Callable[[int], Sequence[str]] = lambda i: (), category: Callable[[int], str] = str
) -> list[int]:
    # One statement for the lot: a round trip per row dominates at a few thousand rows.
    # Tags travel as one '|'-joined string per product (tags in tests never contain '|').
    with engine.begin() as conn:
        ids = (
            conn.execute(
                text(
                    "INSERT INTO ynet.products (external_id, title, category, tags, image_uri) "
                    "SELECT 'p' || i, 'product ' || i, c, COALESCE(string_to_array(NULLIF(t, ''), '|'), '{}'), "
                    "'/img/' || i || '.jpg' "
                    "FROM unnest(CAST(:i AS int[]), CAST(:c AS text[]), CAST(:t AS text[])) AS u(i, c, t) "
                    "ORDER BY i RETURNING id"
                ),
                {"i": list(range(n)), "c": [category(i) for i in range(n)], "t": ["|".join(tags(i)) for i in range(n)]},
            )
            .scalars()
            .all()
        )
    return sorted(ids)


def add_embeddings(engine: Engine, model_id: int, product_ids: Sequence[int], vectors: np.ndarray) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ynet.embeddings (product_id, model_id, image_sha256, embedding) "
                "SELECT p, :mid, :sha, CAST(v AS vector) FROM unnest(CAST(:p AS int[]), CAST(:v AS text[])) AS u(p, v)"
            ),
            {"mid": model_id, "sha": "0" * 64, "p": list(product_ids), "v": [vector_text(v) for v in vectors]},
        )
        conn.execute(text("ANALYZE ynet.products"))
        conn.execute(text("ANALYZE ynet.embeddings"))


def catalogue(
    engine: Engine,
    version: str,
    vectors: np.ndarray,
    tags: Callable[[int], Sequence[str]] = lambda i: (),
    category: Callable[[int], str] = lambda i: "dress" if i % 2 else "skirt",
) -> int:
    """An active model with one product per vector; returns the model's id."""
    model_id = add_model(engine, version, vectors.shape[1])
    ids = add_products(engine, len(vectors), tags, category)
    add_embeddings(engine, model_id, ids, vectors)
    set_state(engine, model_id, "active")
    return model_id


def exact_top(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    """The names of the k `rows` nearest to `query` by exact cosine distance (ties by row order)."""
    distances = 1.0 - vectors[rows] @ query
    return [f"p{rows[i]}" for i in np.argsort(distances, kind="stable")[:k]]


def photo(seed: int, size: int = 48) -> Image.Image:
    """A small, blocky random picture (the default model's features differ per seed)."""
    cells = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize((size, size), Image.Resampling.NEAREST)
