"""A larger catalogue grown from encoded products: the scale benchmark's 100,000 and 1,000,000.

Drawing and encoding a million products would take days on this machine, so a catalogue larger than the
encoded one keeps every encoded product and adds *mixtures*: a new product is the normalised mixture
lambda * a + (1 - lambda) * b of two different encoded products a and b of the same category, lambda
drawn uniformly from [0.3, 0.7]. A mixture lies between two real garments of one kind, as a new product
in a shop resembles the ones it has; it is never a copy of one (lambda stays away from 0 and 1), so the
queries' own products keep their place among near neighbours. Queries are never grown: they are the
encoded street photos of the encoded products.
"""

from __future__ import annotations

import numpy as np

LAMBDA = (0.3, 0.7)
CHUNK = 65_536


def mixtures(
    vectors: np.ndarray, categories: np.ndarray, count: int, seed: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`count` new unit vectors (float32, written into `out` when given), each a mixture of two products of
    one category, and their categories.

    A category with a single product cannot mix; its products are never drawn as the first of a pair."""
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(categories == c) for c in np.unique(categories)}
    mixable = np.concatenate([np.zeros(0, np.int64), *(rows for rows in members.values() if len(rows) > 1)])
    if count and not len(mixable):
        raise ValueError(f"no category has two products to mix (categories: {', '.join(members)})")
    first = rng.choice(mixable, size=count)
    second = np.empty(count, dtype=np.int64)
    for category, rows in members.items():
        chosen = np.flatnonzero(categories[first] == category)
        if len(chosen):
            # the partner is drawn among the category's other products: draw one of len - 1, step past `first`
            draw = rng.integers(0, len(rows) - 1, size=len(chosen))
            second[chosen] = rows[draw + (draw >= np.searchsorted(rows, first[chosen]))]
    weight = rng.uniform(*LAMBDA, size=(count, 1)).astype(np.float32)
    mixed = out if out is not None else np.empty((count, vectors.shape[1]), np.float32)
    # In chunks: a million 1280-d mixtures are 5 GB, and the whole-array expression held four of them at once.
    for start in range(0, count, CHUNK):
        chunk = slice(start, start + CHUNK)
        part = weight[chunk] * vectors[first[chunk]] + (1 - weight[chunk]) * vectors[second[chunk]]
        mixed[chunk] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return mixed, categories[first]


def grown(vectors: np.ndarray, categories: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The encoded products first (rows 0..N-1, in their order), then mixtures up to `size` rows."""
    if size < len(vectors):
        raise ValueError(f"cannot grow {len(vectors)} encoded products to fewer ({size})")
    catalogue = np.empty((size, vectors.shape[1]), np.float32)
    catalogue[: len(vectors)] = vectors
    _, extra_categories = mixtures(vectors, categories, size - len(vectors), seed, out=catalogue[len(vectors) :])
    return catalogue, np.concatenate([categories, extra_categories])
