"""The context stage (CtxYNet) on a frozen first stage: it cannot collapse the model it re-ranks.

Only the context attention learns. The street branch, its projection and the whole shop side stay
as the first stage left them (an earlier version retrained the street branch on held-out lists, and
on a harder real-garment set that branch fell to 0.002 top-1 and took the re-rank with it). The
attention starts at zero, which is exactly the first stage's average-pooled query, so "epoch 0" is
the first stage itself: the learning rate and the number of epochs are chosen on a selection split
of held-out training products among candidates that include that start, and the chosen stage is
then judged against the unchanged first stage on products neither step saw. Because the street
branch is frozen, its maps are computed once and every epoch trains on them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ynet_db.models.evaluate import Ranking, first_hit_ranks, report, topk_accuracy
from ynet_db.nn.losses import context_triplet_loss
from ynet_db.nn.ynet import YNet


@dataclass(frozen=True)
class ContextOptions:
    epochs: int = 10
    lrs: tuple[float, ...] = (0.1, 0.01)
    """Learning rates tried; the best (lr, epoch) on the selection split wins, epoch 0 included."""
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 1e-5
    margin: float = 0.3
    candidates: int = 16
    """Hard negatives per query, taken from the first stage's ranking."""
    seed: int = 0


@dataclass(frozen=True)
class EncodedQueries:
    """A frozen first stage's view of some products: street maps, gallery vectors and their items."""

    maps: torch.Tensor
    """Tensor[Q, V, L, D]: the street map of each query's V cached views, in the embedding space."""
    query_items: list[str]
    gallery: torch.Tensor
    """Tensor[G, D], L2-normalised first-stage shop vectors."""
    gallery_items: list[str]

    def queries(self) -> torch.Tensor:
        """The first stage's own query vectors (view 0, average-pooled), normalised."""
        return F.normalize(self.maps[:, 0].mean(dim=1), dim=-1)


@dataclass(frozen=True)
class ContextEvidence:
    """What was chosen and how the chosen stage compared with the first stage it re-ranks."""

    lr: float
    epochs: int
    selection: dict[str, dict[str, float]] = field(default_factory=dict)
    """Selection-split top-1 per tried lr and epoch ('0' is the first stage)."""
    plain: dict[str, object] = field(default_factory=dict)
    reranked: dict[str, object] = field(default_factory=dict)
    helps: bool = False
    chosen: dict[str, torch.Tensor] = field(default_factory=dict)
    """The chosen attention's weights, kept even when the gate resets the network's (for reports)."""

    def to_metrics(self) -> dict[str, object]:
        return {
            "chosen_lr": self.lr,
            "chosen_epochs": self.epochs,
            "selection_top1": self.selection,
            "judged_plain": self.plain.get("top_k"),
            "judged_reranked": self.reranked.get("top_k"),
            "judged_standard_error": self.plain.get("standard_error"),
            "judged_queries": self.plain.get("queries"),
            "rerank_measured_to_help": self.helps,
        }


def rerank_helps(plain: dict[str, object], reranked: dict[str, object]) -> bool:
    """Top-1 better by more than one standard error, top-20 not worse."""
    p, r, se = plain["top_k"], reranked["top_k"], plain["standard_error"]
    return bool(r["1"] - p["1"] > se["1"] and r["20"] >= p["20"])  # type: ignore[index]


@torch.inference_mode()
def context_ranks(network: YNet, encoded: EncodedQueries, *, rerank: bool) -> np.ndarray:
    """Ranks of the encoded queries (view 0) in their gallery, re-ranked by the context attention or not."""
    maps = encoded.maps[:, 0]

    def reranker(query: int, candidates: torch.Tensor) -> torch.Tensor:
        return network.context_scores(maps[query][None], encoded.gallery[candidates][None])[0][0]

    return first_hit_ranks(
        encoded.queries(),
        encoded.gallery,
        encoded.query_items,
        encoded.gallery_items,
        reranker=reranker if rerank else None,
    )


def context_report(network: YNet, encoded: EncodedQueries, *, rerank: bool) -> dict[str, object]:
    return report(Ranking(context_ranks(network, encoded, rerank=rerank), ["all"] * len(encoded.query_items)))


def context_top1(network: YNet, encoded: EncodedQueries, *, rerank: bool) -> float:
    return topk_accuracy(context_ranks(network, encoded, rerank=rerank), (1,))[1]


@torch.inference_mode()
def hard_negatives(encoded: EncodedQueries, k: int) -> torch.Tensor:
    """Per query, the gallery rows of the k closest other products under the first stage: [Q, k]."""
    scores = encoded.queries() @ encoded.gallery.t()
    items = {item: i for i, item in enumerate(sorted(set(encoded.gallery_items)))}
    gallery_codes = torch.tensor([items[i] for i in encoded.gallery_items])
    query_codes = torch.tensor([items.get(i, -1) for i in encoded.query_items])
    same = query_codes[:, None] == gallery_codes[None, :]
    return scores.masked_fill(same, float("-inf")).topk(min(k, int((~same).sum(1).min())), dim=1).indices


def positive_rows(encoded: EncodedQueries) -> torch.Tensor:
    """Per query, the gallery row of its product (the first of its shop images)."""
    first: dict[str, int] = {}
    for row, item in enumerate(encoded.gallery_items):
        first.setdefault(item, row)
    missing = [item for item in encoded.query_items if item not in first]
    if missing:
        raise ValueError(f"{len(missing)} queries have no shop image in the gallery, e.g. product {missing[0]!r}")
    return torch.tensor([first[item] for item in encoded.query_items])


def context_epochs(
    network: YNet, encoded: EncodedQueries, options: ContextOptions, lr: float
) -> Callable[[int], float]:
    """Returns step(epoch) that trains the context attention one epoch and returns the mean loss."""
    attention = network.context_attention
    params = list(attention.parameters())
    for param in network.parameters():
        param.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=options.momentum, weight_decay=options.weight_decay)
    candidates = torch.cat([positive_rows(encoded)[:, None], hard_negatives(encoded, options.candidates)], dim=1)

    def step(epoch: int) -> float:
        g = torch.Generator().manual_seed(options.seed * 100_003 + epoch)
        order = torch.randperm(len(encoded.query_items), generator=g)
        total, steps = 0.0, 0
        for start in range(0, len(order), options.batch_size):
            rows = order[start : start + options.batch_size]
            views = torch.randint(encoded.maps.shape[1], (len(rows),), generator=g)
            scores, _ = network.context_scores(encoded.maps[rows, views], encoded.gallery[candidates[rows]])
            loss = context_triplet_loss(scores, options.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        return total / max(steps, 1)

    return step


def choose_context_attention(
    network: YNet, train: EncodedQueries, select: EncodedQueries, options: ContextOptions
) -> tuple[dict[str, torch.Tensor], float, int, dict[str, dict[str, float]]]:
    """Train from zero at each lr; keep the (lr, epoch) with the best selection top-1, epoch 0 (the start) included."""
    start = copy.deepcopy(network.context_attention.state_dict())
    best_state, best_lr, best_epoch = start, 0.0, 0
    best = first_stage = context_top1(network, select, rerank=False)
    selection: dict[str, dict[str, float]] = {}
    for lr in options.lrs:
        network.context_attention.load_state_dict(start)
        step = context_epochs(network, train, options, lr)
        curve = {"0": first_stage}
        for epoch in range(1, options.epochs + 1):
            network.context_attention.train()
            step(epoch)
            network.context_attention.eval()
            top1 = context_top1(network, select, rerank=True)
            curve[str(epoch)] = top1
            if top1 > best:
                best, best_lr, best_epoch = top1, lr, epoch
                best_state = copy.deepcopy(network.context_attention.state_dict())
        selection[str(lr)] = curve
    network.context_attention.load_state_dict(best_state)
    for param in network.parameters():
        param.requires_grad_(False)
    return best_state, best_lr, best_epoch, selection


def train_context_stage(
    network: YNet,
    train: EncodedQueries,
    select: EncodedQueries,
    judge: EncodedQueries,
    options: ContextOptions,
) -> ContextEvidence:
    """Train and choose the context attention, then judge it against the unchanged first stage.

    A stage that does not beat the first stage on `judge` by more than a standard error (top-20 not
    lower) is reported as not helping; the attention is then reset to zero, so the stored re-ranker
    is the first stage itself, and search does not re-rank with it.
    """
    chosen, lr, epochs, selection = choose_context_attention(network, train, select, options)
    plain = context_report(network, judge, rerank=False)
    reranked = context_report(network, judge, rerank=True)
    helps = epochs > 0 and rerank_helps(plain, reranked)
    if not helps:
        with torch.no_grad():
            for param in network.context_attention.parameters():
                param.zero_()
    return ContextEvidence(lr, epochs, selection, plain, reranked, helps, chosen)
