"""pgvector's wire forms: the text form parses back to the very same float32 values."""

from __future__ import annotations

import numpy as np
import pytest

from ynet_db.db.vectors import stored_vectors, vector_text


def test_the_text_form_parses_back_to_the_same_float32_bits() -> None:
    edges = [0.0, -0.0, 1.0, -1.0, 1e-45, -1.1754944e-38, 3.4028235e38, 0.1, 1 / 3, 123456.79]
    vectors = np.concatenate([np.asarray(edges, np.float32), np.random.default_rng(0).standard_normal(5000)])
    vectors = vectors.astype(np.float32)
    text = vector_text(vectors)
    assert text.startswith("[") and text.endswith("]")
    parsed = np.asarray([float(value) for value in text[1:-1].split(",")], dtype=np.float32)
    assert parsed.view(np.uint32).tolist() == vectors.view(np.uint32).tolist()


def test_the_binary_form_is_read_as_pgvector_sends_it() -> None:
    vector = np.asarray([0.5, -2.0, 3.25], dtype=np.float32)
    blob = np.asarray([3, 0], dtype=">i2").tobytes() + vector.astype(">f4").tobytes()
    np.testing.assert_array_equal(stored_vectors([blob, blob]), np.stack([vector, vector]))


def test_binary_vectors_of_different_sizes_are_refused_not_misread() -> None:
    short = np.asarray([2, 0], dtype=">i2").tobytes() + np.asarray([1.0, 2.0], dtype=">f4").tobytes()
    long = np.asarray([3, 0], dtype=">i2").tobytes() + np.asarray([1.0, 2.0, 3.0], dtype=">f4").tobytes()
    with pytest.raises(ValueError, match="different or malformed sizes"):
        stored_vectors([short, long])
