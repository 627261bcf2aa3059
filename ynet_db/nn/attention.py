"""Attention pooling over a feature map's locations: from tags (TagYNet) and from a candidate (CtxYNet).

Every scorer is zero-initialised so that, before training, its weights are uniform and the pooled
feature is exactly the average-pooled one: adding attention can never make the starting point worse
(docs/method.md#start-at-pretrained-quality).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ynet_db.nn.config import ContextForm


def attend(maps: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last axis of `scores` and the weighted sum of `maps`' locations.

    maps [B, L, C] with scores [B, L] -> (pooled [B, C], weights [B, L]); or maps [B, L, C] with
    scores [B, N, L] -> (pooled [B, N, C], weights [B, N, L]).
    """
    weights = torch.softmax(scores, dim=-1)
    if scores.dim() == 2:
        return torch.einsum("bl,blc->bc", weights, maps), weights
    return torch.bmm(weights, maps), weights


class TagAttention(nn.Module):
    """s_l = x_l . (W t): a bias-free linear embedding of the multi-hot tags scores each location."""

    def __init__(self, num_tags: int, channels: int, power: float = 1.0):
        super().__init__()
        # Zero start: every location scores 0, so the weights start uniform (average pooling).
        self.weight = nn.Parameter(torch.zeros(channels, num_tags))
        self.power = power
        """Of the weighted power mean that pools the map (1: the weighted sum; 3: GeM)."""

    def forward(self, maps: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """maps [B, L, C], multi-hot tags [B, T] -> (pooled [B, C], weights [B, L])."""
        embedding = tags.to(maps.dtype) @ self.weight.t()
        return self.pool(maps, torch.einsum("blc,bc->bl", maps, embedding))

    def pool(self, maps: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """maps [B, L, C], scores [B, L] -> (the map pooled by softmax(scores) [B, C], those weights [B, L])."""
        if self.power == 1.0:
            return attend(maps, scores)
        weights = torch.softmax(scores, dim=-1)
        return power_mean(maps, weights[:, None], self.power)[:, 0], weights


class ContextAttention(nn.Module):
    """Query attention given a candidate's vector f (CtxYNet), in one of three forms (docs/method.md#ctxynet).

    linear: s_l = u . x_l + (V^T f)_l;  dot: s_l = tau * x_l . f;  mlp: s_l = h . tanh(U x_l + W f).
    """

    def __init__(self, form: ContextForm, channels: int, locations: int, hidden: int = 128, power: float = 1.0):
        super().__init__()
        self.form = form
        self.power = power
        """Of the weighted power mean that pools the map, as the first stage pools it (1: the weighted sum)."""
        if form == "linear":
            self.u = nn.Parameter(torch.zeros(channels))
            self.v = nn.Parameter(torch.zeros(channels, locations))
        elif form == "dot":
            self.scale = nn.Parameter(torch.zeros(()))
        elif form == "mlp":
            self.map_in = nn.Linear(channels, hidden, bias=False)
            self.context_in = nn.Linear(channels, hidden)
            self.out = nn.Parameter(torch.zeros(hidden))
        else:
            raise ValueError(f"unknown context form {form!r}")

    def scores(self, maps: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """maps [B, L, D], contexts [B, N, D] -> scores [B, N, L]."""
        if self.form == "linear":
            return (maps @ self.u).unsqueeze(1) + contexts @ self.v
        if self.form == "dot":
            return self.scale * (contexts @ maps.transpose(1, 2))
        hidden = self.map_in(maps).unsqueeze(1) + self.context_in(contexts).unsqueeze(2)  # [B, N, L, H]
        return torch.tanh(hidden) @ self.out

    def forward(self, maps: torch.Tensor, contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """maps [B, L, D], contexts [B, N, D] -> (query features [B, N, D], weights [B, N, L])."""
        if self.power == 1.0:
            return attend(maps, self.scores(maps, contexts))
        weights = torch.softmax(self.scores(maps, contexts), dim=-1)
        return power_mean(maps, weights, self.power), weights


def power_mean(maps: torch.Tensor, weights: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Weighted power mean of `maps`' locations: (sum_l w_l x_l^p)^(1/p), the weighted sum when p = 1.

    maps [B, L, D] (non-negative when p != 1) with weights [B, N, L] -> [B, N, D].
    """
    if power == 1.0:
        return torch.bmm(weights, maps)
    # The floor keeps the root's gradient and value finite where a channel is zero at every location.
    # The root as exp(log(y) / p): the same value, at half the CPU time of pow(y, 1 / p), which
    # was the largest cost of re-ranking 256 candidates (2.6 against 1.2 ms for [256, 1280]).
    return (torch.bmm(weights, maps.clamp(min=1e-6).pow(power)).log() / power).exp()


def activation_mask(maps: torch.Tensor) -> torch.Tensor:
    """Pooling weights [B, L] that crop a query to what the backbone itself finds: uniform over the
    locations whose summed activation reaches the map's mean, zero elsewhere (non-negative maps)."""
    strength = maps.sum(dim=-1)
    keep = (strength >= strength.mean(dim=1, keepdim=True)).to(maps.dtype)
    return keep / keep.sum(dim=1, keepdim=True)


def free_context(
    maps: torch.Tensor,
    candidates: torch.Tensor,
    beta: float,
    power: float = 1.0,
    prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CtxYNet without trained parameters: each candidate c weights the query's locations by
    softmax_l(beta * cos(m_l, c)), and the weighted (power) mean is the query's feature for c.

    maps [B, L, D], candidates [B, N, D] -> (query features [B, N, D], weights [B, N, L]). At beta 0
    the weights are the first stage's pooling weights (uniform, or `prior` [B, L], e.g. the
    activation mask), so every candidate sees the first stage's query vector and a re-rank can only
    depart from the first stage's order as far as beta lets it.
    """
    cosines = F.normalize(candidates, dim=-1) @ F.normalize(maps, dim=-1).transpose(1, 2)
    logits = beta * cosines
    if prior is not None:
        logits = logits + prior.log()[:, None, :]  # log 0 = -inf: a masked-out location gets no weight
    weights = torch.softmax(logits, dim=-1)
    return power_mean(maps, weights, power), weights
