"""Context calibrations: beta chosen on held-out ranks, the gate's rule, and what a model does with one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ynet_db.nn.calibration import CalibrationError, ContextCalibration, choose_beta, paired_standard_error
from ynet_db.nn.checkpoint import CheckpointInfo
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import METRICS_KEY, RetrievalModel


def test_choose_beta_takes_the_best_top1_and_measures_its_gain_against_the_first_stage() -> None:
    plain = np.array([0.0, 3.0, 3.0, 30.0, 1.0, 0.0, 5.0, 2.0])
    reranked = {
        1.0: plain.copy(),
        5.0: np.array([0.0, 0.0, 3.0, 30.0, 0.0, 0.0, 5.0, 2.0]),
        10.0: np.array([0.0, 0.0, 3.0, 30.0, 0.0, 1.0, 5.0, 2.0]),
    }
    chosen = choose_beta(plain, reranked, "held out")
    assert (chosen.beta, chosen.top1_plain, chosen.top1_reranked) == (5.0, 0.25, 0.5)
    assert (chosen.top20_plain, chosen.top20_reranked, chosen.queries) == (7 / 8, 7 / 8, 8)
    assert chosen.gain_standard_error == pytest.approx(paired_standard_error(plain < 1, reranked[5.0] < 1))
    assert chosen.helps  # +0.25 against a standard error of about 0.16, top-20 kept
    # a tie goes to the smaller beta, the one nearer the first stage
    assert choose_beta(plain, {2.0: reranked[5.0], 1.0: reranked[5.0]}, "x").beta == 1.0


@pytest.mark.parametrize(
    ("gain", "top20_after", "helps"), [(0.05, 0.60, True), (0.005, 0.60, False), (0.05, 0.59, False)]
)
def test_the_gate_wants_more_than_one_standard_error_and_no_top20_loss(
    gain: float, top20_after: float, helps: bool
) -> None:
    assert ContextCalibration(5.0, 0.3, 0.3 + gain, 0.6, top20_after, 0.01, 500, "x").helps is helps


def test_a_calibration_round_trips_and_a_bad_one_is_refused_by_field() -> None:
    value = ContextCalibration(5.0, 0.3, 0.35, 0.6, 0.6, 0.01, 500, "validation")
    stored = value.to_dict()
    assert stored["helps"] is True and ContextCalibration.from_dict(stored) == value
    with pytest.raises(CalibrationError, match="field 'beta' is 'five', expected float"):
        ContextCalibration.from_dict({**stored, "beta": "five"})
    with pytest.raises(CalibrationError, match="field 'queries' is missing"):
        ContextCalibration.from_dict({k: v for k, v in stored.items() if k != "queries"})
    with pytest.raises(CalibrationError, match="beta -1.0 is negative"):
        ContextCalibration.from_dict({**stored, "beta": -1})


def test_a_checkpoints_calibration_gates_and_drives_its_rerank(default_model: RetrievalModel) -> None:
    helps = ContextCalibration(10.0, 0.3, 0.35, 0.6, 0.6, 0.01, 500, "validation")
    info = CheckpointInfo(default_model.config, default_model.vocabulary, metrics={METRICS_KEY: helps.to_dict()})
    calibrated = RetrievalModel(default_model.network, info, default_model.version)
    assert calibrated.context_calibration == helps and calibrated.rerank_measured_to_help
    street_map = torch.rand(49, 1280, generator=torch.Generator().manual_seed(1))
    candidates = F.normalize(torch.randn(30, 1280, generator=torch.Generator().manual_seed(2)), dim=-1)
    torch.testing.assert_close(
        calibrated.rerank(street_map, candidates), default_model.free_rerank(street_map, candidates, 10.0)
    )
    # a shop's own calibration (the registry's) overrides the shipped one
    torch.testing.assert_close(
        calibrated.rerank(street_map, candidates, ContextCalibration(2.0, 0.3, 0.3, 0.6, 0.6, 0.01, 9, "shop")),
        default_model.free_rerank(street_map, candidates, 2.0),
    )


def test_gem_pooling_is_a_new_version_and_average_pooling_keeps_the_old_one() -> None:
    average = RetrievalModel.load_default(config=ModelConfig())
    assert average.version == "ynet-lite0-default@ba7e12f9"  # the default's version before the pooling options
    assert "pooling_power" not in ModelConfig().to_dict() and "query_mask" not in ModelConfig().to_dict()
    gem = RetrievalModel.load_default(config=ModelConfig(pooling_power=3.0))
    assert gem.version != average.version and gem.config.to_dict()["pooling_power"] == 3.0
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    street = gem.encode_street(pixels)
    expected = F.normalize(street.maps.clamp(min=1e-6).pow(3).mean(dim=1).pow(1 / 3), dim=-1)
    torch.testing.assert_close(street.vectors, expected)
    torch.testing.assert_close(gem.encode_shop(pixels, [[], []]).vectors, street.vectors, atol=1e-5, rtol=1e-5)


def test_gem_pooling_and_the_query_mask_are_refused_where_the_map_can_be_negative() -> None:
    with pytest.raises(ValueError, match="GeM pooling needs a power in \\[1, 16\\] and the identity projection"):
        ModelConfig(name="x", projection="linear", embedding_dim=256, pooling_power=3.0)
    with pytest.raises(ValueError, match="query_mask needs the identity projection"):
        ModelConfig(name="x", projection="linear", embedding_dim=256, query_mask=True)


def test_the_query_mask_pools_the_strongest_locations_and_the_rerank_starts_there() -> None:
    masked = RetrievalModel.load_default(config=ModelConfig(query_mask=True))
    street = masked.encode_street(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5)))
    strength = street.maps[0].sum(-1)
    keep = strength >= strength.mean()
    assert 0 < int(keep.sum()) < 49
    torch.testing.assert_close(street.vectors[0], F.normalize(street.maps[0][keep].mean(dim=0), dim=0))
    candidates = F.normalize(torch.randn(20, 1280, generator=torch.Generator().manual_seed(6)), dim=-1)
    at_zero = masked.free_rerank(street.maps[0], candidates, 0.0)  # beta 0: the first stage's own order
    torch.testing.assert_close(at_zero, -(street.vectors[0] - candidates).pow(2).sum(-1), atol=1e-5, rtol=1e-5)
