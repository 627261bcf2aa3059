"""Triplet hinge losses on squared distances of L2-normalised features (docs/method.md#losses).

Anchor = street image, positive = the same product's shop image, negatives = other products' shop
images in the batch: either the batch shifted by 1..k positions (the authors' scheme) or, per anchor,
the hardest in-batch negative (the closest other product).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Mining = Literal["shifted", "hardest"]


def hinge(positive_distances: torch.Tensor, negative_distances: torch.Tensor, margin: float) -> torch.Tensor:
    """mean over anchors and negatives of max(0, d(a, p) - d(a, n) + m); positives [B], negatives [B, K]."""
    return F.relu(positive_distances.unsqueeze(1) - negative_distances + margin).mean()


def squared_distances(anchors: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """[B, D] x [N, D] -> [B, N] squared Euclidean distances of the normalised vectors."""
    a = F.normalize(anchors, dim=-1)
    o = F.normalize(others, dim=-1)
    return (2.0 - 2.0 * a @ o.t()).clamp_min(0.0)


def triplet_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    margin: float = 0.3,
    mining: Mining = "shifted",
    shifts: int = 4,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row i of `positives` matches row i of `anchors`; the other rows are negatives.

    `groups` (one id per row) marks rows of the same product, which are never used as negatives.
    """
    batch = anchors.shape[0]
    distances = squared_distances(anchors, positives)
    positive = distances.diagonal()
    rows = torch.arange(batch, device=anchors.device)
    same = rows[:, None] == rows[None, :] if groups is None else groups[:, None] == groups[None, :]
    if mining == "hardest":
        hardest = distances.masked_fill(same, float("inf")).min(dim=1).values
        valid = torch.isfinite(hardest)
        return hinge(positive[valid], hardest[valid, None], margin) if valid.any() else distances.sum() * 0.0
    shift_count = min(shifts, batch - 1)
    if shift_count < 1:
        return distances.sum() * 0.0
    columns = (rows[:, None] + torch.arange(1, shift_count + 1, device=anchors.device)[None, :]) % batch
    negative = distances.gather(1, columns)
    keep = ~same.gather(1, columns)
    losses = F.relu(positive[:, None] - negative + margin)
    return (losses * keep).sum() / keep.sum().clamp_min(1)


def context_triplet_loss(scores: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """CtxYNet: scores [B, K] are minus squared distances, column 0 the positive, the rest negatives."""
    distances = -scores
    return hinge(distances[:, 0], distances[:, 1:], margin)
