"""Shared fixtures for the model tests: the pretrained network is built once per session."""

from __future__ import annotations

import pytest
import torch

from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def default_model() -> RetrievalModel:
    return RetrievalModel.load_default(device="cpu")


@pytest.fixture(scope="session")
def demo_model() -> RetrievalModel:
    from ynet_db.presentation.demo import demo_checkpoint

    return RetrievalModel.load(demo_checkpoint())


@pytest.fixture(scope="session")
def small_config() -> ModelConfig:
    """A trained-model config sized for 64x64 test images (2x2 maps) and a 32-d embedding."""
    return ModelConfig(name="test-small", projection="linear", embedding_dim=32, map_size=2, input_size=64)


@pytest.fixture()
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
