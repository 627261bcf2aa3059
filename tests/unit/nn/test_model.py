import torch
import torch.nn.functional as F

from ynet_db.nn.model import RetrievalModel


def test_shop_and_street_encodings_have_the_documented_shapes(default_model: RetrievalModel) -> None:
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    shop = default_model.encode_shop(pixels, [["a:b"]] * 3)
    street = default_model.encode_street(pixels)
    d = default_model.embedding_dim
    assert shop.vectors.shape == (3, d) and shop.vectors.dtype == torch.float32
    torch.testing.assert_close(shop.vectors.norm(dim=-1), torch.ones(3))
    assert street.vectors.shape == (3, d) and street.maps.shape == (3, 4, d)
    # with attention at its start, shop and street vectors of one image are the same average-pooled vector
    torch.testing.assert_close(shop.vectors, street.vectors, atol=1e-5, rtol=1e-5)


def test_default_identity_and_preprocessing(default_model: RetrievalModel) -> None:
    assert default_model.version.startswith("ynet-lite0-default@")
    assert default_model.version == RetrievalModel.load_default().version
    # GeM pooling, and the training-free re-rank only as far as its shipped validation evidence says
    assert default_model.config.pooling_power == 3.0
    calibration = default_model.context_calibration
    assert calibration is not None and calibration.judged_on.endswith("(validation products of the training split)")
    assert default_model.rerank_measured_to_help is calibration.helps
    from PIL import Image

    pixels = default_model.preprocess(Image.new("RGB", (300, 200), (127, 127, 127)))
    assert pixels.shape == (3, 224, 224)
    assert float(pixels.abs().max()) < 0.01


def test_rerank_of_the_untrained_model_is_cosine_order(default_model: RetrievalModel) -> None:
    # without a calibration, the learned context attention at its start: the first stage's order
    uncalibrated = RetrievalModel(default_model.network, default_model.info, "uncalibrated@0")
    assert uncalibrated.context_calibration is None and not uncalibrated.rerank_measured_to_help
    street = uncalibrated.encode_street(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3)))
    candidates = F.normalize(torch.randn(256, default_model.embedding_dim), dim=-1)
    scores = uncalibrated.rerank(street.maps[0], candidates)
    assert scores.shape == (256,)
    expected = -(street.vectors[0] - candidates).pow(2).sum(-1)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
    weights = uncalibrated.context_weights(street.maps[0], candidates[:3])
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
