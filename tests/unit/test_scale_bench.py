"""The scale benchmark's pure parts (bench/truth.py, bench/grown.py): its ground truth against a slow
loop, and the mixtures that grow a catalogue. `python bench/scale.py --help` works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    """A bench/ module by its path, without putting bench/ on sys.path for the rest of the suite."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


truth = bench_module("truth")
grown = bench_module("grown")


def small_integer_vectors(rows: int, dim: int, seed: int) -> np.ndarray:
    """Vectors whose dot products float32 computes exactly, in any order of summation, with many ties."""
    return np.random.default_rng(seed).integers(-2, 3, (rows, dim)).astype(np.float32)


def slow_nearest(catalogue: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    similarity = [float(np.dot(row, query)) for row in catalogue]
    return sorted(range(len(catalogue)), key=lambda i: (-similarity[i], i))[:k]


def test_nearest_rows_is_the_slow_loop_ties_by_lower_row() -> None:
    catalogue = small_integer_vectors(300, 6, seed=1)
    catalogue[250] = catalogue[3]  # exact duplicates: the lower row comes first
    queries = np.concatenate([small_integer_vectors(9, 6, seed=2), catalogue[[3]]])
    found = truth.nearest_rows(catalogue, queries, k=25, block=4)  # blocks that do not divide the queries
    assert found.shape == (10, 25)
    assert [row.tolist() for row in found] == [slow_nearest(catalogue, q, 25) for q in queries]
    assert found[9][0] == 3 and 250 in found[9].tolist()


def test_nearest_rows_asks_for_more_than_the_catalogue_has() -> None:
    catalogue = small_integer_vectors(7, 4, seed=3)
    query = small_integer_vectors(1, 4, seed=4)
    assert truth.nearest_rows(catalogue, query, k=256)[0].tolist() == slow_nearest(catalogue, query[0], 7)


def test_ranks_count_the_rows_strictly_nearer() -> None:
    catalogue = small_integer_vectors(200, 5, seed=5)
    queries = small_integer_vectors(11, 5, seed=6)
    rows = np.arange(11) * 7
    expected = [sum(float(c @ q) > float(catalogue[r] @ q) for c in catalogue) for q, r in zip(queries, rows)]
    assert truth.ranks(catalogue, queries, rows, block=3).tolist() == expected


def test_recall_is_the_share_of_true_rows_found() -> None:
    assert truth.recall([[1, 2, 9], [4]], np.array([[1, 2, 3], [4, 5, 6]])).tolist() == pytest.approx([2 / 3, 1 / 3])


def test_a_mixture_is_two_products_of_one_category_weighted_within_lambda() -> None:
    # Orthonormal products: a mixture's non-zero coordinates name its two products and their weights.
    vectors = np.eye(12, dtype=np.float32)
    categories = np.array(["dress"] * 5 + ["coat"] * 6 + ["scarf"])  # one scarf: it cannot mix
    mixed, mixed_categories = grown.mixtures(vectors, categories, 2000, seed=7)
    assert mixed.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mixed, axis=1), 1, rtol=1e-6)
    pairs = set()
    for vector, category in zip(mixed, mixed_categories, strict=True):
        a, b = np.flatnonzero(vector > 1e-6)  # two distinct products, never one product twice
        assert categories[a] == categories[b] == category != "scarf"
        share = vector[a] / (vector[a] + vector[b])  # lambda or 1 - lambda
        assert 0.3 - 1e-6 <= share <= 0.7 + 1e-6
        pairs.add((int(a), int(b)))
    assert len(pairs) == 5 * 4 / 2 + 6 * 5 / 2  # every pair within a category is drawn
    np.testing.assert_array_equal(mixed, grown.mixtures(vectors, categories, 2000, seed=7)[0])  # the seed decides


def test_grown_keeps_the_encoded_products_first() -> None:
    vectors = np.eye(4, dtype=np.float32)
    categories = np.array(["a", "a", "b", "b"])
    catalogue, catalogue_categories = grown.grown(vectors, categories, 10, seed=0)
    assert catalogue.shape == (10, 4)
    np.testing.assert_array_equal(catalogue[:4], vectors)
    assert catalogue_categories.tolist()[:4] == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="cannot grow 4 encoded products to fewer"):
        grown.grown(vectors, categories, 3, seed=0)
    with pytest.raises(ValueError, match="no category has two products"):
        grown.mixtures(vectors, np.array(["a", "b", "c", "d"]), 1, seed=0)


def test_the_command_explains_itself() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--size" in done.stdout and "DATASET" in done.stdout
