from pathlib import Path

import matplotlib.cbook
import pytest
import torch
from PIL import Image

from ynet_db.nn.backbone import WeightsError, default_weights_path, load_pretrained_state, pretrained_lite0
from ynet_db.nn.config import LITE0_SHA256, ModelConfig

MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait that matplotlib ships


def test_pretrained_weights_load_strictly_and_classify_a_real_photo() -> None:
    model = pretrained_lite0()  # load_state_dict(strict=True) inside
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        image = Image.open(handle).convert("RGB")
    pixels = ModelConfig().preprocess(image)[None]
    with torch.inference_mode():
        first, second = model(pixels), model(pixels)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert int(first.argmax()) == MILITARY_UNIFORM


def test_feature_map_shape() -> None:
    with torch.inference_mode():
        maps = pretrained_lite0().features(torch.zeros(1, 3, 224, 224))
    assert maps.shape == (1, 1280, 7, 7)


def test_weights_with_another_hash_are_refused() -> None:
    with pytest.raises(WeightsError, match="sha256"):
        load_pretrained_state(default_weights_path(), "0" * 64)


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_pretrained_state(tmp_path / "none.pth", LITE0_SHA256)
