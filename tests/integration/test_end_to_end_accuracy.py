"""Through the database, top-k accuracy matches the offline evaluator for the same model (issue 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from ynet_db.ingestion.embed import run_once
from ynet_db.models.evaluate import evaluate_model
from ynet_db.models.registry import ModelIdentity, activate, register
from ynet_db.nn.model import RetrievalModel
from ynet_db.presentation import demo

TOLERANCE = 0.005


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return RetrievalModel.load_default()


def test_database_path_matches_offline_evaluation(
    engine: Engine, model: RetrievalModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(tmp_path))  # run_once's default fetch reads the demo's images
    config = demo.DemoConfig(products=24, street_per_product=1, seed=5)
    dataset = demo.demo_dataset(tmp_path, config, workers=1)
    offline = evaluate_model(model, dataset.split("test"), progress=False)

    register(engine, ModelIdentity.of(model))
    activate(engine, model.version)
    summary = demo.import_demo_catalogue(engine, dataset, progress=False)
    assert summary.added == 24
    while run_once(engine, model, "test-worker", 8).claimed:
        pass
    outcomes = demo.run_queries(engine, model, dataset, limit=None)
    online = demo.accuracy(outcomes, dataset)

    assert online["queries"] == offline["queries"] == 24
    for k, value in offline["top_k"].items():
        assert abs(online["top_k"][k] - value) <= TOLERANCE, (k, online["top_k"], offline["top_k"])
    assert offline["top_k"]["1"] < 1.0, "a benchmark this easy would not tell the two paths apart"
