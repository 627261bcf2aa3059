"""Preprocessing in NumPy gives exactly the tensors the torch formulation gave (the one training used)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ynet_db.nn.config import ModelConfig


def torch_reference(config: ModelConfig, image: Image.Image) -> torch.Tensor:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((config.input_size, config.input_size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return (pixels - torch.tensor(config.mean).view(3, 1, 1)) / torch.tensor(config.std).view(3, 1, 1)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
@pytest.mark.parametrize("input_size", [224, 64])
def test_preprocessing_is_bitwise_the_torch_formulation(mode: str, input_size: int) -> None:
    config = ModelConfig(input_size=input_size, map_size=input_size // 32)
    noise = np.random.default_rng(3).integers(0, 256, (301, 187, 3), dtype=np.uint8)
    image = Image.fromarray(noise).convert(mode)
    got, expected = config.preprocess(image), torch_reference(config, image)
    assert got.shape == (3, input_size, input_size) and got.dtype == torch.float32
    assert torch.equal(got, expected)
