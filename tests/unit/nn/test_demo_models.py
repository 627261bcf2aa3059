"""The checkpoints `ynet-db demo --model` serves ship with the package and are what their names say."""

from __future__ import annotations

from ynet_db.nn.checkpoint import load_checkpoint
from ynet_db.presentation.demo import DEMO_MODELS, demo_model


def test_every_demo_model_ships_and_the_default_needs_no_file() -> None:
    assert demo_model("default") is None
    for which in ("pairs", "catalogue"):
        path = demo_model(which)
        assert path is not None and path.is_file(), which


def test_the_catalogue_model_was_trained_without_street_photos_and_checked_on_held_out_products() -> None:
    path = demo_model("catalogue")
    assert path is not None
    info = load_checkpoint(path).info
    assert info.metrics["trained_from"] == "catalogue"
    check = info.metrics["catalogue_check"]
    assert check["beats_default"] is True and check["queries"] >= 100
    assert info.metrics["plan"]["crop_views"] is True
    assert not info.rerank_measured_to_help  # catalogue training never claims a re-ranker
    assert set(DEMO_MODELS) == {"pairs", "catalogue", "default"}
