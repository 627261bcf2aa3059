"""Attention maps: a model's weights over feature-map locations, drawn over the image as a heatmap.

TagYNet: where the shop encoder looks given the product's tags. CtxYNet: where the query encoder
looks given one candidate's stored vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ynet_db.nn.model import RetrievalModel


def shop_attention(model: RetrievalModel, image: Image.Image, tags: Sequence[str]) -> torch.Tensor:
    """TagYNet weights over the shop map, [side, side]."""
    encoding = model.encode_shop(model.preprocess(image)[None], [list(tags)])
    return square(encoding.attention[0])


def query_attention(model: RetrievalModel, image: Image.Image, candidate: torch.Tensor) -> torch.Tensor:
    """CtxYNet weights over the query map given one candidate's normalised vector, [side, side]."""
    street = model.encode_street(model.preprocess(image)[None])
    return square(model.context_weights(street.maps[0], candidate.reshape(1, -1))[0])


def square(weights: torch.Tensor) -> torch.Tensor:
    side = int(round(weights.numel() ** 0.5))
    return weights.reshape(side, side)


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
