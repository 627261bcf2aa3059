"""The training-free context re-rank in search: calibrated on a catalogue's own photos through the real
query path, stored with the model version, and used by search only where it was measured to help."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from catalogue_vectors import add_embeddings, add_model, add_products, catalogue, photo, set_state, unit_vectors
from click.testing import CliRunner
from sqlalchemy import Engine, text

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.images.policy import FetchPolicy
from ynet_db.models.calibrate import CalibrationRefused, calibrate, store
from ynet_db.models.registry import find
from ynet_db.nn.calibration import ContextCalibration
from ynet_db.nn.model import RetrievalModel
from ynet_db.search.prefilter import SearchError, active_model
from ynet_db.search.query import search


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return RetrievalModel.load_default()


def calibration(beta: float, gain: float) -> ContextCalibration:
    return ContextCalibration(beta, 0.30, 0.30 + gain, 0.60, 0.61, 0.01, 500, "test")


def set_calibration(engine: Engine, model_id: int, value: ContextCalibration) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ynet.models SET config = jsonb_build_object('context_rerank', CAST(:c AS jsonb)) WHERE id = :id"
            ),
            {"c": json.dumps(value.to_dict()), "id": model_id},
        )


def test_search_follows_the_registrys_calibration(engine: Engine, model: RetrievalModel) -> None:
    stored = unit_vectors(120, model.embedding_dim, seed=3)
    model_id = catalogue(engine, model.version, stored)
    set_calibration(engine, model_id, calibration(beta=10.0, gain=0.05))
    image = photo(11)
    result = search(engine, image, k=8, candidates=40, model=model, exact=True)
    assert result.reranked  # measured to help on this catalogue: re-ranked without being asked
    street = model.encode_street(model.preprocess(image)[None])
    rows = [int(row.external_id[1:]) for row in result.rows]
    expected = model.free_rerank(street.maps[0], torch.from_numpy(stored[rows]), 10.0).numpy()
    np.testing.assert_allclose([row.rerank_score for row in result.rows], expected, rtol=1e-5, atol=1e-6)
    assert [row.rerank_score for row in result.rows] == sorted((row.rerank_score for row in result.rows), reverse=True)

    set_calibration(engine, model_id, calibration(beta=10.0, gain=0.005))  # within one standard error
    result = search(engine, image, k=8, candidates=40, model=model, exact=True)
    assert not result.reranked and all(row.rerank_score is None for row in result.rows)


def test_a_malformed_stored_calibration_is_refused_by_name(engine: Engine, model: RetrievalModel) -> None:
    model_id = catalogue(engine, model.version, unit_vectors(20, model.embedding_dim, seed=4))
    with engine.begin() as conn:
        conn.execute(
            text("""UPDATE ynet.models SET config = '{"context_rerank": {"beta": "ten"}}' WHERE id = :id"""),
            {"id": model_id},
        )
    with pytest.raises(
        SearchError, match=r"calibration of model .* unreadable \(context calibration: field 'queries' is"
    ):
        search(engine, photo(1), k=5, candidates=10, model=model)


def garment_catalogue(engine: Engine, model: RetrievalModel, folder: Path, n: int) -> int:
    """`n` products with drawn shop photos on disk, embedded by the model itself; the model is active."""
    from ynet_db.data.garments import sample_garment
    from ynet_db.data.scenes import shop_photo

    rng = np.random.default_rng(0)
    garments = [sample_garment(rng) for _ in range(n)]
    paths = []
    for i, garment in enumerate(garments):
        paths.append(folder / f"{i}.jpg")
        shop_photo(garment, [garments[(i + 1) % n]], 224, rng).image.save(paths[-1])
    model_id = add_model(engine, model.version, model.embedding_dim)
    ids = add_products(engine, n)
    with engine.begin() as conn:
        for product_id, path in zip(ids, paths, strict=True):
            conn.execute(
                text("UPDATE ynet.products SET image_uri = :u WHERE id = :id"), {"u": str(path), "id": product_id}
            )
    from PIL import Image

    pixels = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in paths])
    add_embeddings(engine, model_id, ids, model.encode_shop(pixels, [[]] * n).vectors.numpy())
    set_state(engine, model_id, "active")
    return model_id


def test_calibrate_measures_through_the_query_path_and_search_uses_the_result(
    engine: Engine, model: RetrievalModel, tmp_path: Path
) -> None:
    garment_catalogue(engine, model, tmp_path, 24)
    with engine.connect() as conn:
        record = find(conn, model.version)
    result = calibrate(engine, model, record, queries=24, minimum=20, policy=FetchPolicy(roots=(tmp_path,)))
    assert result.queries == 24 and result.judged_on == "catalogue: 24 augmented views of its own photos"
    assert result.top1_plain > 0.5  # a view of a product's own photo mostly finds it
    assert result.top1_reranked >= result.top1_plain  # the best beta of the grid, at worst a tie
    store(engine, record, result)
    with engine.connect() as conn:
        stored = active_model(conn).context_rerank
    assert stored is not None and ContextCalibration.from_dict(stored) == result
    outcome = search(engine, photo(2), k=5, candidates=24, model=model, exact=True)
    assert outcome.reranked == result.helps


def test_calibrate_refuses_a_catalogue_too_small_to_measure(
    engine: Engine, model: RetrievalModel, tmp_path: Path
) -> None:
    garment_catalogue(engine, model, tmp_path, 3)
    with engine.connect() as conn:
        record = find(conn, model.version)
    with pytest.raises(CalibrationRefused, match="3 readable embedded products, at least 20 needed"):
        calibrate(engine, model, record, queries=10, policy=FetchPolicy(roots=(tmp_path,)))


def test_the_default_of_an_earlier_release_still_loads_from_its_registration(engine: Engine) -> None:
    """The default's pooling changed its version: workers must still serve the old one while the new back-fills."""
    from ynet_db.models.calibrate import load_registered_model
    from ynet_db.models.registry import ModelIdentity, register
    from ynet_db.models.serving import load_registered
    from ynet_db.nn.config import ModelConfig

    earlier = RetrievalModel.load_default(config=ModelConfig())  # average pooling, as main shipped it
    record = register(engine, ModelIdentity.of(earlier))
    assert record.version == earlier.version != RetrievalModel.load_default().version
    assert load_registered(engine, record.id, Settings(runtime="torch")).version == earlier.version
    assert load_registered_model(engine, record).version == earlier.version


def test_model_calibrate_command_stores_the_result(
    engine: Engine, model: RetrievalModel, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    garment_catalogue(engine, model, tmp_path, 20)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(tmp_path))
    result = CliRunner().invoke(main, ["model", "calibrate", model.version, "--queries", "20"])
    assert result.exit_code == 0, result.output
    assert "catalogue: 20 augmented views of its own photos" in result.output and "search re-ranks:" in result.output
    with engine.connect() as conn:
        assert ContextCalibration.from_dict(active_model(conn).context_rerank or {}).queries == 20
    unknown = CliRunner().invoke(main, ["model", "calibrate", "nobody@0"])
    assert unknown.exit_code == 1 and "no model named or versioned 'nobody@0'" in unknown.output
