"""Ground truth by brute force: the k nearest catalogue rows of each query, in NumPy.

Float32 matrix products on unit vectors (cosine similarity), a block of queries at a time so memory
stays at `block` x N floats; ties are broken by the lower row, as the database breaks them by product id.
"""

from __future__ import annotations

import numpy as np


def nearest_rows(catalogue: np.ndarray, queries: np.ndarray, k: int, block: int = 64) -> np.ndarray:
    """[Q, min(k, N)] catalogue rows, nearest first, for each of Q queries."""
    k = min(k, len(catalogue))
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        similarity = queries[start : start + block] @ catalogue.T
        # argpartition finds the k best in O(N); the rows tied with the k-th are kept so the tie-break holds
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1 : k]
        for i, row in enumerate(similarity):
            candidates = np.flatnonzero(row >= kth[i])
            order = np.lexsort((candidates, -row[candidates]))
            out[start + i] = candidates[order[:k]]
    return out


def recall(found: list[set[int]] | list[list[int]], truth: np.ndarray) -> np.ndarray:
    """Per query, the share of its true rows among those found."""
    return np.array([len(set(f).intersection(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])


def ranks(catalogue: np.ndarray, queries: np.ndarray, rows: np.ndarray, block: int = 64) -> np.ndarray:
    """Per query, the place of catalogue row `rows[i]` among all rows (0 = nearest): the rows strictly nearer."""
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), block):
        similarity = queries[start : start + block] @ catalogue.T
        own = similarity[np.arange(len(similarity)), rows[start : start + block]]
        out[start : start + block] = (similarity > own[:, None]).sum(axis=1)
    return out
