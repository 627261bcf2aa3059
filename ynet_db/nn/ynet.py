"""Y-Net: a shared trunk, then street and shop branches with separate weights, then the attention heads.

Both branches are copies of the backbone's top layers, so both start from the same pretrained
weights (the Y). Each ends in a map of L = 7 x 7 locations, projected to the embedding dimension
(with a second input size, both sizes' maps as one map: 7 x 7 + 10 x 10, nn/scales.py).

Where the projection is applied: the street side projects every location (its map is kept for
CtxYNet re-ranking, and the candidates live in the embedding space). The shop side scores and pools
the branch's map first and projects the pooled vector: the projection is affine and the attention
weights sum to 1, so P(sum_l a_l x_l) + b = sum_l a_l (P x_l + b), at 1/L of the cost. That keeps
the shop encoder as fast as the bare backbone.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ynet_db.nn.attention import ContextAttention, TagAttention
from ynet_db.nn.backbone import EfficientNetLite0, MBConvBlock
from ynet_db.nn.config import ModelConfig


class Trunk(nn.Module):
    """The shared lower layers: stem and the first `trunk_blocks` MBConv blocks."""

    def __init__(self, backbone: EfficientNetLite0, trunk_blocks: int):
        super().__init__()
        self._conv_stem = copy.deepcopy(backbone._conv_stem)
        self._bn0 = copy.deepcopy(backbone._bn0)
        self._blocks = nn.ModuleList(copy.deepcopy(list(backbone._blocks[:trunk_blocks])))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(pixels)))
        for block in self._blocks:
            x = block(x)
        return x


class Branch(nn.Module):
    """One domain's top layers (the rest of the blocks and the head conv): trunk features -> [B, L, C]."""

    def __init__(self, backbone: EfficientNetLite0, trunk_blocks: int):
        super().__init__()
        blocks: list[MBConvBlock] = list(backbone._blocks[trunk_blocks:])  # type: ignore[arg-type]
        self._blocks = nn.ModuleList(copy.deepcopy(blocks))
        self._conv_head = copy.deepcopy(backbone._conv_head)
        self._bn1 = copy.deepcopy(backbone._bn1)

    def forward(self, trunk_features: torch.Tensor) -> torch.Tensor:
        x = trunk_features
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.flatten(2).transpose(1, 2)


class Projection(nn.Module):
    """Affine map from the branch's channels to the embedding; the identity for the default model."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.identity = config.projection == "identity"
        if not self.identity:
            self.linear = nn.Linear(config.map_channels, config.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.identity else self.linear(x)


class YNet(nn.Module):
    """Trunk, two branches, their projections, the tag attention (shop) and context attention (street)."""

    def __init__(self, config: ModelConfig, backbone: EfficientNetLite0, num_tags: int):
        super().__init__()
        self.config = config
        self.trunk = Trunk(backbone, config.trunk_blocks)
        self.street = Branch(backbone, config.trunk_blocks)
        self.shop = Branch(backbone, config.trunk_blocks)
        self.street_projection = Projection(config)
        self.shop_projection = Projection(config)
        self.tag_attention = TagAttention(num_tags, config.map_channels, config.pooling_power)
        self.context_attention = ContextAttention(
            config.context_form, config.embedding_dim, config.locations, config.context_hidden, config.pooling_power
        )

    def freeze_batchnorm(self) -> None:
        """Keep running statistics fixed: batches of 32 on one domain would skew the ImageNet ones."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()

    def branch_maps(self, pixels: torch.Tensor, branch: Branch) -> torch.Tensor:
        """Pixels [B, 3, H, W] -> `branch`'s map [B, L, C] over every input size's locations (each size's
        image through the trunk on its own: see nn/scales.py for why not the whole canvas)."""
        scales = self.config.scales
        return scales.join([branch(self.trunk(view)) for view in scales.views(pixels)])

    def pixels_to_shop(self, pixels: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`shop_vectors` from pixels: (vectors before normalisation [B, D], tag attention weights [B, L])."""
        return self.shop_from_map(self.branch_maps(pixels, self.shop), tags)

    def pixels_to_street(self, pixels: torch.Tensor) -> torch.Tensor:
        """`street_maps` from pixels: [B, L, D]."""
        return self.street_projection(self.branch_maps(pixels, self.street))

    def shop_vectors(self, trunk_features: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TagYNet shop embedding before normalisation [B, D] and its attention weights [B, L]."""
        return self.shop_from_map(self.shop(trunk_features), tags)

    def shop_from_map(self, maps: torch.Tensor, tags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The shop branch's map [B, L, C] -> tag-attention pooled and projected vectors [B, D], weights [B, L]."""
        pooled, weights = self.tag_attention(maps, tags)
        return self.shop_projection(pooled), weights

    def street_maps(self, trunk_features: torch.Tensor) -> torch.Tensor:
        """The street map in the embedding space, [B, L, D]."""
        return self.street_projection(self.street(trunk_features))

    def context_scores(self, street_maps: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CtxYNet: street maps [B, L, D], normalised candidates [B, N, D] -> (scores [B, N], weights [B, N, L]).

        The score is minus the squared distance between the candidate-conditioned query feature and
        the candidate, both normalised: higher is better.
        """
        queries, weights = self.context_attention(street_maps, candidates)
        queries = F.normalize(queries, dim=-1)
        return -(queries - candidates).pow(2).sum(-1), weights
