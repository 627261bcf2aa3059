"""The search worker's rounds, in this process with the real default model: the same answers as the Python
API, and each bad request answered by its own error (the worker as a process: tests/fault)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pytest
from catalogue_vectors import catalogue, photo, unit_vectors
from sqlalchemy import Engine, text

from ynet_db.config import Settings
from ynet_db.nn.model import RetrievalModel
from ynet_db.search.prefilter import ActiveModel
from ynet_db.search.query import search
from ynet_db.search.requests import RequestWorker, RequestWorkerOptions


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return RetrievalModel.load_default()


@dataclass
class Preloaded:
    """The model this module loaded once, whatever is active (the worker checks versions itself)."""

    model: RetrievalModel

    def model_for(self, active: ActiveModel) -> RetrievalModel:
        return self.model


def png(seed: int) -> bytes:
    out = io.BytesIO()
    photo(seed).save(out, format="PNG")
    return out.getvalue()


def ask(engine: Engine, image: bytes | None = None, url: str | None = None, k: int = 5, filters: object = None) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                text(
                    "INSERT INTO ynet.search_requests (image, image_url, k, filters) "
                    "VALUES (:image, :url, :k, CAST(:filters AS jsonb)) RETURNING id"
                ),
                {"image": image, "url": url, "k": k, "filters": None if filters is None else json.dumps(filters)},
            ).scalar_one()
        )


def outcome(engine: Engine, request_id: int) -> tuple[str, str | None, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT state, error, attempts, answers FROM ynet.search_requests WHERE id = :id"), {"id": request_id}
        ).one()
    return row.state, row.error, row.attempts, row.answers


def answered(engine: Engine, request_id: int) -> list[tuple[str, float, float | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT external_id, distance, rerank_score FROM ynet.search_wait(:id, 0)"), {"id": request_id}
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_one_round_answers_good_requests_as_the_python_api_and_fails_each_bad_one_alone(
    engine: Engine, settings: Settings, model: RetrievalModel
) -> None:
    catalogue(engine, model.version, unit_vectors(150, model.embedding_dim, seed=5))
    dresses = {"category": {"in": ["dress"]}}
    good = [ask(engine, png(1), k=5, filters=dresses), ask(engine, png(2), k=7)]
    bad_image = ask(engine, b"GIF89a but not really")
    bad_filter = ask(engine, png(3), filters={"colour": "red"})
    not_a_mapping = ask(engine, png(3), filters=["dress"])
    internal_url = ask(engine, url="http://127.0.0.1:9/photo.png")
    worker = RequestWorker(engine, settings, Preloaded(model), RequestWorkerOptions(batch_size=8))

    assert worker.serve_batch() == 6

    for request_id, seed, k, filters in ((good[0], 1, 5, dresses), (good[1], 2, 7, None)):
        assert outcome(engine, request_id) == ("done", None, 1, 1)
        expected = search(engine, png(seed), k=k, filters=filters, model=model)
        rows = answered(engine, request_id)
        assert [name for name, _, _ in rows] == [row.external_id for row in expected.rows]
        assert [d for _, d, _ in rows] == pytest.approx([row.distance for row in expected.rows], abs=1e-5)
    assert outcome(engine, bad_image)[:3] == (
        "failed",
        "image query: is not an image in a supported format; accepted formats: JPEG, PNG, WEBP, GIF, BMP, TIFF",
        1,
    )
    assert outcome(engine, bad_filter)[:2] == (
        "failed",
        "unknown filter field 'colour'; allowed: category, external_id, in_stock, price, tags",
    )
    assert outcome(engine, not_a_mapping)[:2] == ("failed", "filters must be a mapping of field to condition, got list")
    state, error, _, _ = outcome(engine, internal_url)
    assert state == "failed"
    assert error == (
        "image http://127.0.0.1:9/photo.png: refused by the fetch policy: the host does not resolve to public "
        "addresses only (internal hosts must be listed in YNET_ALLOWED_HOSTS)"
    )
    assert worker.serve_batch() == 0  # nothing is retried: each error is its request's answer


def test_with_no_active_model_every_request_is_answered_by_that(
    engine: Engine, settings: Settings, model: RetrievalModel
) -> None:
    requests = [ask(engine, png(1)), ask(engine, png(2))]
    RequestWorker(engine, settings, Preloaded(model), RequestWorkerOptions()).serve_batch()
    for request_id in requests:
        state, error, _, _ = outcome(engine, request_id)
        assert state == "failed"
        assert error is not None and error.startswith("no model is active: run `ynet-db model activate NAME`")


def test_a_worker_whose_model_is_not_the_active_one_refuses_to_compare_their_vectors(
    engine: Engine, settings: Settings, model: RetrievalModel
) -> None:
    catalogue(engine, "another@1", unit_vectors(20, model.embedding_dim, seed=5))
    request_id = ask(engine, png(1))
    RequestWorker(engine, settings, Preloaded(model), RequestWorkerOptions()).serve_batch()
    state, error, _, _ = outcome(engine, request_id)
    assert state == "failed"
    assert error is not None and "vectors of two models are never compared" in error
