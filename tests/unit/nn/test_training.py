"""A short training run on tiny synthetic trunk features: the loss falls and accuracy beats chance."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ynet_db.models.evaluate import first_hit_ranks, topk_accuracy
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import build_network
from ynet_db.nn.training import PairFeatures, StageOptions, fit_pca_projection, train_stage
from ynet_db.nn.ynet import YNet


@torch.inference_mode()
def synthetic_pairs(network: YNet, products: int, generator: torch.Generator) -> PairFeatures:
    """Products are random 4x4 colour patterns (64x64 pixels); street views are shifted, re-lit, noisy copies.

    Their trunk features come from the real pretrained trunk, so the branches see realistic inputs.
    """
    patterns = torch.rand(products, 3, 4, 4, generator=generator) * 4 - 2
    shop = F.interpolate(patterns, size=64, mode="nearest")
    views = []
    for _ in range(2):
        shifted = torch.roll(shop, shifts=(int(torch.randint(-6, 7, (1,), generator=generator)),) * 2, dims=(2, 3))
        lit = shifted * (0.8 + 0.4 * torch.rand(products, 1, 1, 1, generator=generator))
        views.append(lit + 0.5 * torch.randn(shop.shape, generator=generator))
    street = torch.stack([network.trunk(v) for v in views], dim=1)
    tags = F.one_hot(torch.arange(products) % 3, 3).float()
    return PairFeatures(street.half(), network.trunk(shop).half(), tags, torch.arange(products))


@torch.inference_mode()
def top1(network, data: PairFeatures) -> float:  # type: ignore[no-untyped-def]
    queries = F.normalize(network.street_maps(data.street[:, 0].float()).mean(1), dim=-1)
    gallery = F.normalize(network.shop_vectors(data.shop.float(), data.tags)[0], dim=-1)
    items = [str(i) for i in data.items.tolist()]
    return topk_accuracy(first_hit_ranks(queries, gallery, items, items), (1,))[1]


def test_short_training_lowers_the_loss_and_beats_chance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = ModelConfig(name="t", projection="linear", embedding_dim=32, map_size=2, input_size=64)
    network = build_network(config, num_tags=3)
    data = synthetic_pairs(network, 48, torch.Generator().manual_seed(7))
    fit_pca_projection(network, data.street[:, 0], data.shop)
    start = top1(network, data)
    options = StageOptions(stage="tagynet", epochs=20, batch_size=16, lr=0.05, margin=0.3)
    losses = train_stage(network, data, options, state_path=tmp_path / "state.safetensors", progress=False)
    assert losses[-1] < losses[0] / 2
    trained = top1(network, data)
    assert trained > 4 / 48 and trained > start  # chance is 1/48

    # resume: a second call with more epochs continues from the saved state
    more = train_stage(
        network,
        data,
        StageOptions(stage="tagynet", epochs=21, batch_size=16, lr=0.05),
        state_path=tmp_path / "state.safetensors",
        progress=False,
    )
    assert len(more) == 21 and np.allclose(more[:20], losses)


def test_the_first_stages_refuse_the_context_stage() -> None:
    """The context stage never retrains the street branch: it is context_stage.py's, on a frozen first stage."""
    config = ModelConfig(name="t", projection="linear", embedding_dim=32, map_size=2, input_size=64)
    network = build_network(config, num_tags=3)
    data = synthetic_pairs(network, 8, torch.Generator().manual_seed(8))
    with pytest.raises(ValueError, match="context stage is context_stage.py's"):
        train_stage(network, data, StageOptions(stage="ctxynet", epochs=1, batch_size=4), progress=False)
