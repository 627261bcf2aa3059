"""The context stage on a frozen first stage: it learns where it can, and is not shipped where it cannot.

The queries are small synthetic street maps in the embedding space: location 0 holds the product's
vector with noise, the other locations hold clutter, another product's vector plus a clutter direction
shared by every split. Average pooling mixes the two; a context attention that learns to look away
from the clutter direction ranks better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ynet_db.nn.config import ModelConfig
from ynet_db.nn.context_stage import ContextOptions, EncodedQueries, train_context_stage
from ynet_db.nn.model import build_network
from ynet_db.nn.ynet import YNet

DIM, SIDE = 32, 2


def small_network() -> YNet:
    config = ModelConfig(name="t", projection="linear", embedding_dim=DIM, map_size=SIDE, input_size=64)
    return build_network(config, num_tags=3)


def cluttered_queries(products: int, first: int, signal: float, seed: int) -> EncodedQueries:
    g = torch.Generator().manual_seed(seed)
    gallery = F.normalize(torch.randn(products, DIM, generator=g), dim=-1)
    clutter_direction = F.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(0)), dim=0)
    queries = range(first, products)
    maps = []
    for item in queries:
        own = signal * gallery[item] + 0.3 * torch.randn(DIM, generator=g)
        others = gallery[torch.randint(products, (SIDE * SIDE - 1,), generator=g)] + 1.5 * clutter_direction
        maps.append(torch.cat([own[None], others])[None])
    items = [str(i) for i in range(products)]
    return EncodedQueries(torch.stack(maps), [items[i] for i in queries], gallery, items)


def split(products: int, signal: float) -> tuple[EncodedQueries, EncodedQueries, EncodedQueries]:
    """Three disjoint query sets, each against its own gallery of `products` products."""
    return tuple(cluttered_queries(products, 0, signal, seed) for seed in (1, 2, 3))  # type: ignore[return-value]


def frozen_state(network: YNet) -> dict[str, torch.Tensor]:
    return {n: t.clone() for n, t in network.state_dict().items() if not n.startswith("context_attention.")}


def test_the_context_stage_learns_and_leaves_the_first_stage_unchanged() -> None:
    torch.manual_seed(0)
    network = small_network()
    before = frozen_state(network)
    train, select, judge = split(60, signal=1.0)
    options = ContextOptions(epochs=4, lrs=(0.5, 0.05), batch_size=16, candidates=8)
    evidence = train_context_stage(network, train, select, judge, options)
    after = frozen_state(network)
    assert all(torch.equal(before[name], after[name]) for name in before), "only the context attention may change"
    assert evidence.epochs > 0 and evidence.lr in options.lrs
    assert evidence.helps, evidence.to_metrics()
    plain, reranked = evidence.plain["top_k"], evidence.reranked["top_k"]  # type: ignore[index]
    assert reranked["1"] > plain["1"]  # type: ignore[index]
    assert float(network.context_attention.u.abs().sum()) > 0
    metrics = evidence.to_metrics()
    assert metrics["rerank_measured_to_help"] is True and metrics["judged_queries"] == 60
    curve = metrics["selection_top1"][str(evidence.lr)]  # type: ignore[index]
    assert curve["0"] < curve[str(evidence.epochs)]


def test_a_context_stage_that_cannot_help_is_not_shipped() -> None:
    """No signal at all (the product's own location is noise): whatever is learned, the stage is the first stage."""
    torch.manual_seed(0)
    network = small_network()
    train, select, judge = split(40, signal=0.0)
    evidence = train_context_stage(network, train, select, judge, ContextOptions(epochs=3, candidates=4))
    assert not evidence.helps
    assert all(float(p.abs().sum()) == 0 for p in network.context_attention.parameters())
    assert evidence.to_metrics()["rerank_measured_to_help"] is False
    assert set(evidence.to_metrics()["selection_top1"]) == {"0.1", "0.01"}  # type: ignore[arg-type]
