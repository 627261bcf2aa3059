"""The worker path: a real `ynet-db worker` process with Redis gives the in-process ranking."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from catalogue_vectors import catalogue, photo, unit_vectors
from sqlalchemy import Engine, text
from ynet_db.workers.app import make_app

from ynet_db.config import Settings
from ynet_db.nn.calibration import ContextCalibration
from ynet_db.nn.model import RetrievalModel
from ynet_db.search.client import CeleryRunner
from ynet_db.search.query import SearchResult, search

# The fault suite's helpers start and kill real worker processes; reuse them rather than copy them.
sys.path.insert(0, str(Path(__file__).parents[1] / "fault"))
from worker_processes import start_worker  # noqa: E402

__all__ = ["start_worker"]


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return RetrievalModel.load_default()


def ranking(result: SearchResult) -> list[str]:
    return [row.external_id for row in result.rows]


def test_worker_and_in_process_searches_give_the_same_results(
    engine: Engine,
    settings: Settings,
    start_worker,  # type: ignore[no-untyped-def]
    model: RetrievalModel,
    redis_url: str,
) -> None:
    catalogue(engine, model.version, unit_vectors(200, model.embedding_dim, seed=5))
    start_worker("--no-dispatcher", "--queues", "search", broker=redis_url)  # a worker kept for queries
    runner = CeleryRunner(make_app(replace(settings, broker_url=redis_url)), timeout_s=120)
    queries = [photo(seed) for seed in range(6)]
    options = {"k": 10, "candidates": 60, "rerank": True, "filters": {"category": {"in": ["dress", "skirt"]}}}
    local = [search(engine, image, model=model, **options) for image in queries]
    remote = [search(engine, queries[0], via=runner, **options)]  # waits for the worker to start
    with ThreadPoolExecutor(5) as pool:  # concurrent callers share messages (batched in the worker)
        remote += list(pool.map(lambda image: search(engine, image, via=runner, **options), queries[1:]))
    for mine, theirs in zip(local, remote, strict=True):
        assert ranking(theirs) == ranking(mine)
        assert (theirs.path, theirs.short, theirs.reranked, theirs.model_version) == (
            mine.path,
            mine.short,
            mine.reranked,
            mine.model_version,
        )
        np.testing.assert_allclose([r.distance for r in theirs.rows], [r.distance for r in mine.rows], atol=1e-5)
        np.testing.assert_allclose(
            [r.rerank_score for r in theirs.rows], [r.rerank_score for r in mine.rows], rtol=1e-4, atol=1e-5
        )


def test_worker_and_in_process_follow_the_same_registry_calibration(
    engine: Engine,
    settings: Settings,
    start_worker,
    model: RetrievalModel,  # type: ignore[no-untyped-def]
    redis_url: str,
) -> None:
    model_id = catalogue(engine, model.version, unit_vectors(150, model.embedding_dim, seed=6))
    helps = ContextCalibration(10.0, 0.30, 0.36, 0.60, 0.62, 0.01, 500, "test")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ynet.models SET config = jsonb_build_object('context_rerank', CAST(:c AS jsonb)) WHERE id = :id"
            ),
            {"c": json.dumps(helps.to_dict()), "id": model_id},
        )
    start_worker("--no-dispatcher", "--queues", "search", broker=redis_url)
    runner = CeleryRunner(make_app(replace(settings, broker_url=redis_url)), timeout_s=120)
    options = {"k": 10, "candidates": 50}  # re-rank left to the gate
    for seed in range(3):
        mine = search(engine, photo(seed), model=model, **options)
        theirs = search(engine, photo(seed), via=runner, **options)
        assert mine.reranked and theirs.reranked
        assert ranking(theirs) == ranking(mine)
        np.testing.assert_allclose(
            [r.rerank_score for r in theirs.rows], [r.rerank_score for r in mine.rows], rtol=1e-4, atol=1e-5
        )
