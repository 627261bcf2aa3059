"""Attention pooling over a feature map's locations: from tags (TagYNet) and from a candidate (CtxYNet).

Every scorer is zero-initialised so that, before training, its weights are uniform and the pooled
feature is exactly the average-pooled one: adding attention can never make the starting point worse
(method.md, "Initialisation decides where training starts").
"""

from __future__ import annotations

import torch
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

    def __init__(self, num_tags: int, channels: int):
        super().__init__()
        # Zero start: every location scores 0, so the weights start uniform (average pooling).
        self.weight = nn.Parameter(torch.zeros(channels, num_tags))

    def forward(self, maps: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """maps [B, L, C], multi-hot tags [B, T] -> (pooled [B, C], weights [B, L])."""
        embedding = tags.to(maps.dtype) @ self.weight.t()
        scores = torch.einsum("blc,bc->bl", maps, embedding)
        return attend(maps, scores)


class ContextAttention(nn.Module):
    """Query attention given a candidate's vector f (CtxYNet), in one of method.md's three forms.

    linear: s_l = u . x_l + (V^T f)_l;  dot: s_l = tau * x_l . f;  mlp: s_l = h . tanh(U x_l + W f).
    """

    def __init__(self, form: ContextForm, channels: int, locations: int, hidden: int = 128):
        super().__init__()
        self.form = form
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
        return attend(maps, self.scores(maps, contexts))
