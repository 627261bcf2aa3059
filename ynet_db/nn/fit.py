"""Fitting a model on a dataset: cache trunk features, start from PCA, run the stages, write a checkpoint.

The context stage trains the context attention alone on the frozen first stage (context_stage.py),
on training products the first stages did not see; its learning rate and epochs are chosen on other
held-out products and the result is judged against the unchanged first stage on still others (the
val split's products when there is one). The checkpoint records that evidence and whether it helped:
search re-ranks by default only then (docs/method.md#when-search-re-ranks: until measured to help, it
should not change what users get), and a stage that did not help is stored as zero attention, i.e. the
first stage itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ynet_db.data.records import ImageRef, RetrievalDataset
from ynet_db.models.evaluate import Ranking, first_hit_ranks
from ynet_db.nn.checkpoint import Checkpoint, CheckpointInfo, differing_tensors, save_checkpoint
from ynet_db.nn.config import ContextForm, ModelConfig
from ynet_db.nn.context_stage import ContextEvidence, ContextOptions, EncodedQueries, train_context_stage
from ynet_db.nn.features import cached_trunk_features
from ynet_db.nn.losses import Mining
from ynet_db.nn.model import build_network
from ynet_db.nn.tags import TagVocabulary
from ynet_db.nn.training import PairFeatures, Stage, StageOptions, fit_pca_projection, train_stage
from ynet_db.nn.ynet import YNet


@dataclass(frozen=True)
class FitPlan:
    stages: tuple[Stage, ...] = ("tagynet", "ctxynet")
    epochs: int = 20
    ctx_epochs: int = 10
    embedding_dim: int = 256
    views: int = 3
    """Cached views per street image (1 = no augmentation)."""
    holdout: float = 0.3
    """Share of training products kept from the first stages for training/judging the re-ranker."""
    context_form: ContextForm = "linear"
    ctx_lrs: tuple[float, ...] = (0.1, 0.01)
    """Learning rates the context stage tries; the best with its epoch count is chosen on held-out products."""
    name: str = "ynet-lite0-trained"
    batch_size: int = 32
    lr: float = 0.01
    margin: float = 0.3
    mining: Mining = "shifted"
    seed: int = 0
    crop: bool = False
    """Crop images to the release's boxes. Off by default: the catalogue serves whole shop photos, and a
    shop photo's box would cut away the other garments that tag attention learns to ignore."""


@dataclass(frozen=True)
class CachedSplit:
    queries: torch.Tensor
    """Tensor[Q, V, C, H, W] street trunk features (one row per pair)."""
    positives: torch.Tensor
    """Tensor[Q, C, H, W] the pair's shop image."""
    query_items: list[str]
    query_categories: list[str]
    query_tags: list[tuple[str, ...]]
    gallery: torch.Tensor
    """Tensor[G, C, H, W]: every shop image of the split's products."""
    gallery_items: list[str]
    gallery_tags: list[tuple[str, ...]]

    def rows(self, items: set[str]) -> CachedSplit:
        q = [i for i, item in enumerate(self.query_items) if item in items]
        g = [i for i, item in enumerate(self.gallery_items) if item in items]
        return CachedSplit(
            self.queries[q],
            self.positives[q],
            [self.query_items[i] for i in q],
            [self.query_categories[i] for i in q],
            [self.query_tags[i] for i in q],
            self.gallery[g],
            [self.gallery_items[i] for i in g],
            [self.gallery_tags[i] for i in g],
        )


def uncropped(ref: ImageRef) -> ImageRef:
    return ImageRef(ref.path, None)


def cache_split(
    network: YNet,
    dataset: RetrievalDataset,
    *,
    views: int,
    crop: bool,
    cache_dir: Path | None,
    device: torch.device,
    progress: bool = True,
) -> CachedSplit:
    config = network.config
    fix = (lambda r: r) if crop else uncropped
    common = {"device": device, "reader": None}
    street = cached_trunk_features(
        network.trunk,
        config,
        [fix(p.street) for p in dataset.pairs],
        cache_dir,
        views=views,
        progress="street images" if progress else None,
        **common,
    )
    gallery_refs = [
        (item, fix(ref)) for item, product in sorted(dataset.products.items()) for ref in product.shop_images
    ]
    shop_refs = list(dict.fromkeys([r for _, r in gallery_refs] + [fix(p.shop) for p in dataset.pairs]))
    # Each shop image is computed once: a pair's shop image is usually one of the gallery's.
    shop = cached_trunk_features(
        network.trunk,
        config,
        shop_refs,
        cache_dir,
        progress="shop images" if progress else None,
        **common,
    )
    row_of = {ref: row for row, ref in enumerate(shop_refs)}
    positives = shop.features[[row_of[fix(p.shop)] for p in dataset.pairs]]
    gallery = shop.features[[row_of[r] for _, r in gallery_refs]]
    products = dataset.products
    return CachedSplit(
        street.features,
        positives[:, 0],
        [p.item_id for p in dataset.pairs],
        [products[p.item_id].category for p in dataset.pairs],
        [products[p.item_id].tags for p in dataset.pairs],
        gallery[:, 0],
        [item for item, _ in gallery_refs],
        [products[item].tags for item, _ in gallery_refs],
    )


def pair_features(split: CachedSplit, vocabulary: TagVocabulary) -> PairFeatures:
    codes = {item: i for i, item in enumerate(sorted(set(split.query_items)))}
    items = torch.tensor([codes[i] for i in split.query_items], dtype=torch.int64)
    return PairFeatures(split.queries, split.positives, vocabulary.encode(split.query_tags).multi_hot, items)


@torch.inference_mode()
def cached_ranking(
    network: YNet,
    split: CachedSplit,
    vocabulary: TagVocabulary,
    *,
    use_tags: bool = True,
    rerank: bool = False,
    device: torch.device | str = "cpu",
) -> Ranking:
    """Ranks of the split's queries against its gallery, computed from cached trunk features."""
    device = torch.device(device)
    network.to(device).eval()
    if use_tags:
        tags = vocabulary.encode(split.gallery_tags).multi_hot
    else:  # zero tags: the attention pools evenly, whatever vocabulary the network was built with
        tags = torch.zeros(len(split.gallery_items), network.tag_attention.weight.shape[1])
    gallery = torch.cat(
        [
            F.normalize(
                network.shop_vectors(split.gallery[s : s + 64].to(device, torch.float32), tags[s : s + 64].to(device))[
                    0
                ],
                dim=-1,
            )
            for s in range(0, len(split.gallery_items), 64)
        ]
    )
    maps = torch.cat(
        [
            network.street_maps(split.queries[s : s + 64, 0].to(device, torch.float32))
            for s in range(0, len(split.query_items), 64)
        ]
    )
    queries = F.normalize(maps.mean(dim=1), dim=-1)

    def reranker(query: int, candidates: torch.Tensor) -> torch.Tensor:
        return network.context_scores(maps[query][None], gallery[candidates][None])[0][0]

    ranks = first_hit_ranks(
        queries, gallery, split.query_items, split.gallery_items, reranker=reranker if rerank else None
    )
    return Ranking(ranks, split.query_categories)


def training_data_hash(dataset: RetrievalDataset) -> str:
    digest = hashlib.sha256()
    for pair in dataset.pairs:
        digest.update(
            f"{pair.street.path}|{pair.street.box}|{pair.shop.path}|{pair.shop.box}|{pair.item_id}\n".encode()
        )
    return digest.hexdigest()


def split_items(items: list[str], share: float, seed: int) -> tuple[set[str], set[str]]:
    order = sorted(set(items))
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    cut = int(round(len(order) * share))
    return set(order[cut:]), set(order[:cut])


@dataclass(frozen=True)
class Fitted:
    """A trained network with what it learned from and the evidence its checkpoint records."""

    network: YNet
    vocabulary: TagVocabulary
    metrics: dict[str, object]
    context: ContextEvidence | None


@torch.inference_mode()
def encode_split(network: YNet, split: CachedSplit, vocabulary: TagVocabulary, device: torch.device) -> EncodedQueries:
    """The first stage's street maps (every cached view) and normalised TagYNet gallery vectors of a split."""
    network.to(device).eval()
    maps = []
    for s in range(0, len(split.query_items), 64):
        views = split.queries[s : s + 64]
        flat = network.street_maps(views.flatten(0, 1).to(device, torch.float32))
        maps.append(flat.view(views.shape[0], views.shape[1], *flat.shape[1:]).cpu())
    tags = vocabulary.encode(split.gallery_tags).multi_hot
    gallery = [
        F.normalize(
            network.shop_vectors(split.gallery[s : s + 64].to(device, torch.float32), tags[s : s + 64].to(device))[0],
            dim=-1,
        ).cpu()
        for s in range(0, len(split.gallery_items), 64)
    ]
    return EncodedQueries(torch.cat(maps), list(split.query_items), torch.cat(gallery), list(split.gallery_items))


def context_splits(
    held: CachedSplit, val: CachedSplit | None, seed: int
) -> tuple[CachedSplit, CachedSplit, CachedSplit]:
    """(train, select, judge) for the context stage: held-out training products train it; the val split's
    products (or, without one, the rest of the held-out products) are halved to choose and to judge."""
    if val is not None:
        train, rest = held, val
    else:
        rest_items, train_items = split_items(held.query_items, 0.5, seed + 1)
        train, rest = held.rows(train_items), held.rows(rest_items)
    judge_items, select_items = split_items(rest.query_items, 0.5, seed + 2)
    return train, rest.rows(select_items), rest.rows(judge_items)


def fit_network(
    dataset: RetrievalDataset,
    plan: FitPlan,
    *,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    state_dir: Path | None = None,
    progress: bool = True,
) -> Fitted:
    """The pipeline `fit` runs: the first stages, then the context stage on the frozen first stage,
    chosen and judged on products the first stages never saw. `state_dir` keeps each stage's resume state."""
    device = torch.device(device)
    train = dataset.split("train")
    if not train.pairs:
        raise ValueError(f"dataset {dataset.name} has no training pairs")
    vocabulary = TagVocabulary.build(p.tags for p in train.products.values())
    config = ModelConfig(
        name=plan.name, projection="linear", embedding_dim=plan.embedding_dim, context_form=plan.context_form
    )
    network = build_network(config, len(vocabulary)).to(device)
    cached = cache_split(
        network, train, views=plan.views, crop=plan.crop, cache_dir=cache_dir, device=device, progress=progress
    )
    fit_pca_projection(network, cached.queries[:, 0], cached.positives, device)
    use_ctx = "ctxynet" in plan.stages
    first_items, held_items = split_items(cached.query_items, plan.holdout if use_ctx else 0.0, plan.seed)
    metrics: dict[str, object] = {}
    base = StageOptions(batch_size=plan.batch_size, lr=plan.lr, margin=plan.margin, mining=plan.mining, seed=plan.seed)
    for stage in plan.stages:
        if stage == "ctxynet":
            continue
        metrics[f"{stage}_losses"] = train_stage(
            network,
            pair_features(cached.rows(first_items), vocabulary),
            replace(base, stage=stage, epochs=plan.epochs),
            device=device,
            state_path=state_dir / f"state-{stage}.safetensors" if state_dir else None,
            progress=progress,
        )
    evidence = None
    if use_ctx:
        val = dataset.split("val")
        cached_val = (
            cache_split(network, val, views=1, crop=plan.crop, cache_dir=cache_dir, device=device, progress=progress)
            if val.pairs
            else None
        )
        parts = context_splits(cached.rows(held_items), cached_val, plan.seed)
        sizes = [len(set(part.query_items)) for part in parts]
        if min(sizes) < 2:  # nothing to rank against: the stage is not trained, and not shipped
            metrics["context_stage"] = {"skipped": f"products to train, choose, judge: {sizes}; needs 2 each"}
        else:
            ctx_train, select, judge = (encode_split(network, part, vocabulary, device) for part in parts)
            options = ContextOptions(epochs=plan.ctx_epochs, lrs=plan.ctx_lrs, margin=plan.margin, seed=plan.seed)
            evidence = train_context_stage(network.cpu(), ctx_train, select, judge, options)
            metrics["context_stage"] = evidence.to_metrics()
    return Fitted(network.cpu(), vocabulary, metrics, evidence)


@dataclass(frozen=True)
class Trained:
    """What `fit` wrote, and the evidence behind it."""

    checkpoint: Checkpoint
    """OUT/model.safetensors as written: what `ynet-db evaluate` loads and a worker serves."""
    context: ContextEvidence | None
    """The context stage's choice and judgement; its chosen attention is kept here even when the gate
    shipped zero attention (the ladder reports both)."""


def fit(
    dataset: RetrievalDataset,
    out_dir: Path,
    plan: FitPlan,
    *,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Trained:
    """The training entry point of `ynet-db train` and of bench/ladder.py: `fit_network` (resumable from
    OUT's stage states), then OUT/model.safetensors with the evidence and the re-rank gate."""
    fitted = fit_network(dataset, plan, device=device, cache_dir=cache_dir, state_dir=out_dir, progress=progress)
    helps = fitted.context.helps if fitted.context else False
    config = fitted.network.config
    base_state = build_network(config, len(fitted.vocabulary)).state_dict()
    info = CheckpointInfo(config, fitted.vocabulary, training_data_hash(dataset.split("train")), fitted.metrics, helps)
    checkpoint = save_checkpoint(
        out_dir / "model.safetensors", info, differing_tensors(fitted.network.state_dict(), base_state)
    )
    return Trained(checkpoint, fitted.context)
