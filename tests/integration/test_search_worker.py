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
from ynet_db.search.query import SearchResult, configured_model, search

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


def test_an_in_process_search_encodes_as_the_worker_does(
    engine: Engine,
    settings: Settings,
    start_worker,  # type: ignore[no-untyped-def]
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both on ONNX Runtime (YNET_RUNTIME), the in-process model exporting the graphs the worker then loads.
    monkeypatch.setenv("YNET_RUNTIME", "onnxruntime")
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    model = configured_model()  # what `search` and `ynet-db search` load when given no model
    assert isinstance(model, RetrievalModel) and model.runtime == "onnxruntime"
    image = photo(11)
    query = model.encode_street(model.preprocess(image)[None]).vectors[0].numpy()
    vectors = unit_vectors(40, model.embedding_dim, seed=8)
    vectors[0] = query  # product p0 is the in-process query vector itself: its distance is 1 - cosine to it
    catalogue(engine, model.version, vectors)
    worker = start_worker("--no-dispatcher", "--queues", "search", broker=redis_url, runtime="onnxruntime")
    runner = CeleryRunner(make_app(replace(settings, broker_url=redis_url)), timeout_s=180)
    theirs = search(engine, image, k=3, rerank=False, via=runner)
    mine = search(engine, image, k=3, rerank=False)  # loads `configured_model()` itself
    assert ranking(theirs)[0] == ranking(mine)[0] == "p0"
    assert mine.rows[0].distance <= 1e-6
    assert theirs.rows[0].distance <= 1 - 0.9999  # the worker's query vector, within cosine 0.9999 of ours
    assert "encoders on onnxruntime" in worker.output()
