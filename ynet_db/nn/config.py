"""The typed model configuration from which the network and its preprocessing are derived.

Serving and training both build their input pipeline from the same `ModelConfig`, so the two cannot
drift apart: input size, mean and standard deviation live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from ynet_db.nn.scales import Scales

ContextForm = Literal["linear", "dot", "mlp"]
CONTEXT_FORMS: tuple[str, ...] = ("linear", "dot", "mlp")

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
BACKBONES = ("efficientnet-lite0",)
PROJECTIONS = ("identity", "linear")
STRIDE = 32
"""The backbone's total downsampling: an input of side S gives a map of side S / 32 (224 -> 7)."""
# A config arrives from a checkpoint's metadata, so its numbers are untrusted: `input_size: 60000` would
# make every image a 43 GB tensor. Bounds (inclusive) keep a loaded model within what the backbone and
# pgvector's HNSW index (2,000 dimensions) can serve.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "input_size": (STRIDE, 1024),
    "trunk_blocks": (0, 16),  # EfficientNet-Lite0 has 16 MBConv blocks
    "map_channels": (1280, 1280),  # its head conv's output channels
    "embedding_dim": (1, 2000),
    "context_hidden": (1, 4096),
    "map_size": (1, 1024 // STRIDE),
}
MAX_NAME_LENGTH = 100
_NAME = re.compile(rf"[^\x00-\x1f\x7f-\x9f]{{1,{MAX_NAME_LENGTH}}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's structure (weights live in the checkpoint).

    Defaults describe the ImageNet-pretrained EfficientNet-Lite0 in the Y-Net / TagYNet / CtxYNet
    structure; the shipped *default* model is these defaults with GeM pooling
    (`ynet_db.nn.model.DEFAULT_CONFIG`, docs/method.md#the-default-path).

    Embedding dimension: the default keeps the backbone's 1280 head channels with an identity
    projection. Plain pretrained features beat every trained variant on real photos
    (docs/method.md#generated-data-does-not-transfer-to-real-photos), and any reduction (e.g. PCA)
    needs a catalogue to be fitted on, which the default does not have; 1280 is within pgvector's
    2000-dimension HNSW limit and costs 5 KiB a vector. Trained checkpoints use a smaller learned
    projection (256 by default), started from the PCA of pooled pretrained features and shared by both
    branches at the start, so training starts at pretrained quality.

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
    second_input_size: int | None = None
    """A second size each image is also seen at (e.g. 320): both sizes' maps pooled together as one map
    of map_size ** 2 + (second_input_size / 32) ** 2 locations (nn/scales.py). Changes the version."""

    def __post_init__(self) -> None:
        _check_fields(self)
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
    def scales(self) -> Scales:
        if self.second_input_size is None:
            return Scales((self.input_size,), (self.map_size,))
        return Scales((self.input_size, self.second_input_size), (self.map_size, self.second_input_size // STRIDE))

    @property
    def locations(self) -> int:
        """L: the map's locations at every input size together."""
        return self.scales.locations

    def to_dict(self) -> dict[str, Any]:
        described = dataclasses.asdict(self)
        # Options at their old behaviour are left unwritten, so configs and versions from before them stay the same.
        if self.pooling_power == 1.0:
            del described["pooling_power"]
        if not self.query_mask:
            del described["query_mask"]
        if self.second_input_size is None:
            del described["second_input_size"]
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
        """An RGB PIL image -> normalised Tensor[3, input_size, input_size] (whole-image resize); with a
        second input size, both sizes on one canvas (`scales.pixel_shape`)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        scales = self.scales
        pixels = scales.pack([self._normalised(rgb, size) for size in scales.sizes])
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def _normalised(self, rgb: Image.Image, size: int) -> np.ndarray:
        """The image resized to size x size and normalised, [size, size, 3] float32."""
        resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
        # NumPy, not torch: a few elementwise passes over 150,000 values are slower through torch's thread
        # pool when the cores are busy (77 ms against 4 ms an image, 2 threads on a loaded 2-core machine).
        pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
        return (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)


def _check_fields(config: ModelConfig) -> None:
    """Raise ValueError naming the first field of `config` that is of the wrong type or out of bounds."""
    if not isinstance(config.name, str) or not _NAME.fullmatch(config.name):
        raise ValueError(f"name {str(config.name)[:40]!r}: 1 to {MAX_NAME_LENGTH} characters, no control characters")
    if config.backbone not in BACKBONES:
        raise ValueError(f"backbone {config.backbone!r}: expected one of {', '.join(BACKBONES)}")
    if not isinstance(config.weights_sha256, str) or not _SHA256.fullmatch(config.weights_sha256):
        raise ValueError(f"weights_sha256 {config.weights_sha256!r}: expected 64 lowercase hex digits")
    if config.projection not in PROJECTIONS:
        raise ValueError(f"projection {config.projection!r}: expected one of {', '.join(PROJECTIONS)}")
    for key, bounds in INT_BOUNDS.items():
        _check_whole(key, getattr(config, key), bounds)
    if config.input_size % STRIDE or config.map_size != config.input_size // STRIDE:
        raise ValueError(
            f"input_size {config.input_size} and map_size {config.map_size}: input_size must be a multiple of "
            f"{STRIDE} and map_size input_size / {STRIDE}"
        )
    _check_second_size(config.second_input_size, config.input_size)
    for key in ("mean", "std"):
        _check_channels(key, getattr(config, key))
    if not isinstance(config.extra, dict):
        raise ValueError(f"extra: expected an object, got {type(config.extra).__name__}")


def _check_whole(key: str, value: Any, bounds: tuple[int, int], multiple_of: int = 1) -> None:
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high or value % multiple_of:
        multiple = f", a multiple of {multiple_of}" if multiple_of > 1 else ""
        raise ValueError(f"{key} {value!r}: expected a whole number from {low} to {high}{multiple}")


def _check_second_size(second: Any, first: int) -> None:
    if second is None:
        return
    _check_whole("second_input_size", second, INT_BOUNDS["input_size"], STRIDE)
    if second == first:
        raise ValueError(f"second_input_size {second}: the same as input_size (one size is seen once)")


def _check_channels(key: str, values: Any) -> None:
    numbers = isinstance(values, tuple) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numbers or len(values) != 3 or not all(math.isfinite(v) and abs(v) <= 255 for v in values):
        raise ValueError(f"{key} {values!r}: expected three finite numbers")
    if key == "std" and not all(v > 0 for v in values):
        raise ValueError(f"std {values!r}: each channel's must be positive")
