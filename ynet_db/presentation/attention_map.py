"""Attention maps: a model's weights over feature-map locations, drawn over the image as a heatmap.

TagYNet: where the shop encoder looks given the product's tags. CtxYNet: where the query encoder
looks given one candidate's stored vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ynet_db.nn.model import RetrievalModel


def shop_attention(model: RetrievalModel, image: Image.Image, tags: Sequence[str]) -> torch.Tensor:
    """TagYNet weights over the shop map, [side, side]."""
    encoding = model.encode_shop(model.preprocess(image)[None], [list(tags)])
    return square(model, encoding.attention[0])


def query_attention(model: RetrievalModel, image: Image.Image, candidate: torch.Tensor) -> torch.Tensor:
    """CtxYNet weights over the query map given one candidate's normalised vector, [side, side]."""
    street = model.encode_street(model.preprocess(image)[None])
    return square(model, model.context_weights(street.maps[0], candidate.reshape(1, -1))[0])


def square(model: RetrievalModel, weights: torch.Tensor) -> torch.Tensor:
    """Weights over the map's L locations -> [side, side] over the image. With two input sizes, the
    weight per unit of image area of both sizes' grids, added on the finer grid."""
    grids = model.config.scales.grids(weights)
    if len(grids) == 1:
        return grids[0]
    side = max(grid.shape[0] for grid in grids)
    # A cell of a side-s grid covers 1/s**2 of the image, so its weight spread over that area is w * s**2.
    density = [F.interpolate((g * g.shape[0] ** 2)[None, None], size=(side, side), mode="nearest") for g in grids]
    return torch.stack(density).sum(dim=0)[0, 0] / side**2


def overlay(image: Image.Image, weights: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """The image with the weights (scaled to their own range) blended over it as a 'jet' heatmap."""
    from matplotlib import colormaps

    w = weights.float().numpy()
    span = float(w.max() - w.min())
    # Uniform attention (average pooling) has no range: show it flat rather than dividing by zero.
    scaled = (w - w.min()) / span if span > 1e-12 else np.full_like(w, 0.5)
    heat = Image.fromarray((scaled * 255).astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR)
    coloured = (colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(coloured), alpha)


def save_overlay(image: Image.Image, weights: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, weights).save(path, format="PNG")
    return path
