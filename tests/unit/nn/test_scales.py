"""Two input scales (`ModelConfig.second_input_size`): one pixel tensor per image, 149-location maps.

The default network is loaded with the option once per session; each test checks the option against
the one-scale network run on each size on its own, which is what the option must compute.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ynet_db.nn.config import ModelConfig
from ynet_db.nn.features import compute_trunk_features
from ynet_db.nn.model import DEFAULT_CONFIG, RetrievalModel
from ynet_db.nn.onnx_engine import MIN_COSINE
from ynet_db.nn.runtime import accelerate
from ynet_db.nn.runtime_gpu import MIN_COSINE as GPU_MIN_COSINE
from ynet_db.nn.runtime_gpu import half_precision_engine
from ynet_db.presentation.attention_map import query_attention

TWO_SCALES = ModelConfig(pooling_power=3.0, second_input_size=320)
LOCATIONS = 7 * 7 + 10 * 10


@pytest.fixture(scope="session")
def two_scale() -> RetrievalModel:
    return RetrievalModel.load_default(config=TWO_SCALES)


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Two smooth, non-square pictures (bicubic-upsampled noise: image-like structure at every scale)."""
    generator = torch.Generator().manual_seed(3)
    cells = [(torch.rand(6, 5, 3, generator=generator) * 255).to(torch.uint8).numpy() for _ in range(2)]
    return [Image.fromarray(c).resize((300, 420), Image.Resampling.BICUBIC) for c in cells]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (300, "second_input_size 300: expected a whole number from 32 to 1024, a multiple of 32"),
        (2048, "second_input_size 2048: expected a whole number from 32 to 1024, a multiple of 32"),
        (0, "second_input_size 0: expected a whole number from 32 to 1024, a multiple of 32"),
        (True, "second_input_size True: expected a whole number from 32 to 1024, a multiple of 32"),
        ("320", "second_input_size '320': expected a whole number from 32 to 1024, a multiple of 32"),
        (320.0, "second_input_size 320.0: expected a whole number from 32 to 1024, a multiple of 32"),
        (224, "second_input_size 224: the same as input_size"),
    ],
)
def test_an_untrusted_second_input_size_is_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "second_input_size": value})


def test_the_option_is_described_only_when_set() -> None:
    assert "second_input_size" not in ModelConfig().to_dict() and "second_input_size" not in DEFAULT_CONFIG.to_dict()
    described = TWO_SCALES.to_dict()
    assert described["second_input_size"] == 320 and ModelConfig.from_dict(described) == TWO_SCALES
    assert (TWO_SCALES.locations, ModelConfig().locations) == (LOCATIONS, 49)
    assert ModelConfig(second_input_size=160).scales.pixel_shape == (3, 224, 384)  # a smaller second size


def test_versions_of_existing_configs_stay_and_the_option_is_a_new_one(two_scale: RetrievalModel) -> None:
    default = RetrievalModel.load_default()
    # The shipped default's version, under which calibrations.json records its beta.
    assert default.version == "ynet-lite0-default@5d1322ca" and default.context_calibration is not None
    assert two_scale.version not in (default.version, "ynet-lite0-default@ba7e12f9")


def test_one_pixel_tensor_carries_both_sizes(photos: list[Image.Image]) -> None:
    pixels = TWO_SCALES.preprocess(photos[0])
    assert pixels.shape == (3, 320, 544) and pixels.dtype == torch.float32
    small, large = ModelConfig().preprocess(photos[0]), ModelConfig(input_size=320, map_size=10).preprocess(photos[0])
    assert torch.equal(pixels[:, :224, :224], small) and torch.equal(pixels[:, :, 224:], large)
    assert not pixels[:, 224:, :224].any()  # the margin under the first image is zero


@torch.inference_mode()
def test_the_maps_are_each_size_run_on_its_own_and_the_whole_canvas_would_not_be(
    two_scale: RetrievalModel, photos: list[Image.Image]
) -> None:
    pixels = torch.stack([two_scale.preprocess(p) for p in photos])
    maps = two_scale.encode_street(pixels).maps
    assert maps.shape == (2, LOCATIONS, 1280)
    network = two_scale.network
    sizes = (ModelConfig(), ModelConfig(input_size=320, map_size=10))
    alone = [network.street(network.trunk(torch.stack([c.preprocess(p) for p in photos]))) for c in sizes]
    # The same weights on the same pixels; only the convolution's algorithm may differ for a strided view.
    torch.testing.assert_close(maps, torch.cat(alone, dim=1), atol=1e-4, rtol=1e-4)
    # Why the canvas is cut: run whole, the receptive fields cross the seam and the zero margin.
    whole = network.street(network.trunk(pixels)).view(2, 10, 17, -1)
    cut = torch.cat([whole[:, :7, :7].flatten(1, 2), whole[:, :, 7:].flatten(1, 2)], dim=1)
    assert float(F.cosine_similarity(cut, maps, dim=-1).min()) < 0.9


@torch.inference_mode()
def test_both_encoders_and_the_rerank_pool_all_149_locations(two_scale: RetrievalModel) -> None:
    pixels = torch.randn(3, *TWO_SCALES.scales.pixel_shape, generator=torch.Generator().manual_seed(7))
    street = two_scale.encode_street(pixels)
    gem = F.normalize(street.maps.clamp(min=1e-6).pow(3).mean(dim=1).pow(1 / 3), dim=-1)
    torch.testing.assert_close(street.vectors, gem)
    shop = two_scale.encode_shop(pixels, [[], ["category:dress"], []])
    assert shop.attention.shape == (3, LOCATIONS) and shop.average_pooled == [True, True, True]
    network = two_scale.network
    shop_maps = network.branch_maps(pixels, network.shop)
    torch.testing.assert_close(shop.vectors, F.normalize(shop_maps.pow(3).mean(dim=1).pow(1 / 3), dim=-1))
    candidates = F.normalize(torch.randn(20, 1280, generator=torch.Generator().manual_seed(8)), dim=-1)
    # calibrations.json records the benchmark's beta for this version (bench/default_path.py's two-scale row)
    assert two_scale.context_calibration is not None and two_scale.rerank_measured_to_help
    scores = two_scale.rerank(street.maps[0], candidates)
    torch.testing.assert_close(scores, two_scale.free_rerank(street.maps[0], candidates, 20.0))
    at_zero = two_scale.free_rerank(street.maps[0], candidates, 0.0)  # beta 0: the first stage's order
    torch.testing.assert_close(at_zero, -(street.vectors[0] - candidates).pow(2).sum(-1), atol=1e-5, rtol=1e-5)
    weights = two_scale.context_weights(street.maps[0], candidates[:1])
    assert weights.shape == (1, LOCATIONS)
    assert query_attention(two_scale, Image.new("RGB", (50, 80), (200, 40, 40)), candidates[0]).shape == (10, 10)


def test_the_query_mask_reads_both_sizes() -> None:
    masked = RetrievalModel.load_default(config=TWO_SCALES.replace(query_mask=True))
    street = masked.encode_street(torch.randn(1, 3, 320, 544, generator=torch.Generator().manual_seed(9)))
    strength = street.maps[0].sum(-1)
    keep = strength >= strength.mean()
    assert 0 < int(keep[:49].sum()) and 0 < int(keep[49:].sum()) and int(keep.sum()) < LOCATIONS
    torch.testing.assert_close(street.vectors[0], F.normalize(street.maps[0][keep].pow(3).mean(0).pow(1 / 3), dim=0))


def test_pixels_of_one_size_are_refused_with_the_shape_wanted(two_scale: RetrievalModel) -> None:
    with pytest.raises(ValueError, match=r"pixels of shape \(3, 224, 224\): .* takes \(3, 320, 544\)"):
        two_scale.encode_street(torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="trunk features are cached at one input size"):
        compute_trunk_features(two_scale.network.trunk, TWO_SCALES, [])


def test_the_onnx_graphs_of_the_option_match_pytorch(two_scale: RetrievalModel, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    onnx = accelerate(RetrievalModel.load_default(config=TWO_SCALES), "onnxruntime", tmp_path)
    assert onnx.runtime == "onnxruntime"  # `accelerate` ran the check input of the canvas's shape
    assert onnx.engine is not None and not onnx.engine.handles(torch.zeros(1, 3, 224, 224))
    for batch in (1, 3):  # the batch axis stays dynamic
        pixels = torch.randn(batch, 3, 320, 544, generator=torch.Generator().manual_seed(batch))
        tags = [["category:dress"]] * batch
        got, expected = onnx.encode_shop(pixels, tags), two_scale.encode_shop(pixels, tags)
        assert float(F.cosine_similarity(got.vectors, expected.vectors).min()) >= MIN_COSINE
        assert got.attention.shape == (batch, LOCATIONS)
        street, street_expected = onnx.encode_street(pixels), two_scale.encode_street(pixels)
        assert street.maps.shape == (batch, LOCATIONS, 1280)
        assert float(F.cosine_similarity(street.maps, street_expected.maps, dim=-1).min()) >= MIN_COSINE


def test_the_gpu_engine_cuts_the_canvas_too() -> None:
    """The fp16 engine (here under CPU autocast, slow: small sizes) passes its check on the canvas."""
    config = ModelConfig(input_size=64, map_size=2, second_input_size=96)
    reference, model = RetrievalModel.load_default(config=config), RetrievalModel.load_default(config=config)
    model.engine = half_precision_engine(model.network, model.device)  # raises below cosine 0.999
    pixels = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(11))
    street, expected = model.encode_street(pixels), reference.encode_street(pixels)
    assert model.runtime == "torch-fp16" and street.maps.shape == (2, 2 * 2 + 3 * 3, 1280)
    assert float(F.cosine_similarity(street.vectors, expected.vectors).min()) >= GPU_MIN_COSINE
