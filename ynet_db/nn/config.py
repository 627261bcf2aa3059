"""The typed model configuration from which the network and its preprocessing are derived.

Serving and training both build their input pipeline from the same `ModelConfig`, so the two cannot
drift apart: input size, mean and standard deviation live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

ContextForm = Literal["linear", "dot", "mlp"]
CONTEXT_FORMS: tuple[str, ...] = ("linear", "dot", "mlp")

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's structure (weights live in the checkpoint).

    Defaults describe the shipped *default* model: the ImageNet-pretrained EfficientNet-Lite0 in the
    Y-Net / TagYNet / CtxYNet structure.

    Embedding dimension: the default keeps the backbone's 1280 head channels with an identity
    projection. method.md measured plain pretrained features beating every trained variant on real
    photos, and any reduction (e.g. PCA) needs a catalogue to be fitted on, which the default does not
    have; 1280 is within pgvector's 2000-dimension HNSW limit and costs 5 KiB a vector. Trained
    checkpoints use a smaller learned projection (256 by default), started from the PCA of pooled
    pretrained features and shared by both branches at the start, so training starts at pretrained
    quality.

    Trunk split: blocks before `trunk_blocks` are shared; the last MBConv block (192->320 channels,
    7x7) and the 1x1 head conv (320->1280) are duplicated into the street and shop branches. That is
    about an eighth of the backbone's compute, so the frozen trunk's outputs can be cached and the
    branches trained on a CPU.
    """

    name: str = "ynet-lite0-default"
    backbone: str = "efficientnet-lite0"
    weights_sha256: str = LITE0_SHA256
    input_size: int = 224
    # The TF-Lite EfficientNet-Lite weights were trained on (pixel - 127) / 128.
    mean: tuple[float, float, float] = (127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0)
    std: tuple[float, float, float] = (128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)
    trunk_blocks: int = 15
    map_channels: int = 1280
    embedding_dim: int = 1280
    projection: Literal["identity", "linear"] = "identity"
    context_form: ContextForm = "linear"
    context_hidden: int = 128
    """Hidden width of the MLP context form (unused by the others)."""
    map_size: int = 7
    """Side of the branches' feature map at input_size (L = map_size ** 2 locations)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes recorded with a checkpoint (never read back into behaviour)."""
    pooling_power: float = 1.0
    """p of the generalised-mean (GeM) pooling of both branches' maps: (sum_l a_l x_l^p)^(1/p) with the
    attention weights a. 1 is the weighted average (the paper's); 3 is GeM as in image retrieval. Only
    with the identity projection, whose map is non-negative (ReLU6). Changing it changes the version."""
    query_mask: bool = False
    """Pool the query (street) map only over the locations whose summed activation reaches the map's
    mean: a crop to the garment as the backbone sees it. Identity projection only; changes the version."""

    def __post_init__(self) -> None:
        if self.context_form not in CONTEXT_FORMS:
            raise ValueError(f"context_form {self.context_form!r}: expected one of {', '.join(CONTEXT_FORMS)}")
        if self.projection == "identity" and self.embedding_dim != self.map_channels:
            raise ValueError("an identity projection needs embedding_dim == map_channels")
        if self.pooling_power != 1.0 and (self.projection != "identity" or not 1.0 <= self.pooling_power <= 16.0):
            raise ValueError(
                f"pooling_power {self.pooling_power}: GeM pooling needs a power in [1, 16] and the identity "
                "projection (a projected map has negative values, which a power mean cannot pool)"
            )
        if self.query_mask and self.projection != "identity":
            raise ValueError("query_mask needs the identity projection (it reads the map's activations)")

    @property
    def locations(self) -> int:
        return self.map_size * self.map_size

    def to_dict(self) -> dict[str, Any]:
        described = dataclasses.asdict(self)
        # Options at their old behaviour are left unwritten, so configs and versions from before them stay the same.
        if self.pooling_power == 1.0:
            del described["pooling_power"]
        if not self.query_mask:
            del described["query_mask"]
        return described

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """An RGB PIL image -> normalised Tensor[3, input_size, input_size] (whole-image resize)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        resized = rgb.resize((self.input_size, self.input_size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std
