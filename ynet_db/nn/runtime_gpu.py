"""The encoders on a GPU: PyTorch under fp16 autocast, channels_last, uploads from pinned host memory.

Autocast runs the convolutions and matrix products in fp16 (the tensor cores' format) and keeps
softmax and the reductions in fp32, so the tag attention's scores cannot overflow; channels_last is the
layout cuDNN's fp16 convolutions are fastest in. A batch is copied from page-locked host memory without
blocking, so the copy overlaps the previous batch's kernels. Like the ONNX graphs, the engine is
compared with the fp32 network on a fixed input when it is made: below cosine 0.999 the model stays
fp32 (`runtime.accelerate`).

The same code runs on a CPU (fp16 autocast there too, no pinning), which is how the tests cover it on
machines without a GPU; on a CPU the product uses ONNX Runtime instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ynet_db.nn.onnx_engine import check
from ynet_db.nn.ynet import YNet

MIN_COSINE = 0.999
"""fp16 rounding moves embeddings slightly; the issue's bar for GPU embeddings against the CPU's."""


@dataclass
class HalfPrecisionEngine:
    network: YNet
    """The model's own fp32 network, in channels_last layout."""
    device: torch.device
    dtype: torch.dtype = torch.float16
    name: str = "torch-fp16"

    def handles(self, pixels: torch.Tensor) -> bool:
        return pixels.dim() == 4 and pixels.dtype == torch.float32 and pixels.shape[0] > 0

    def upload(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and pixels.device.type == "cpu" and not pixels.is_pinned():
            pixels = pixels.pin_memory()
        moved = pixels.to(self.device, non_blocking=True)
        return moved.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def shop_vectors(self, pixels: torch.Tensor, multi_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self.dtype):
            vectors, weights = self.network.pixels_to_shop(self.upload(pixels), multi_hot.to(self.device))
        return vectors.float().cpu(), weights.float().cpu()

    @torch.inference_mode()
    def street_maps(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype):
            maps = self.network.pixels_to_street(self.upload(pixels))
        return maps.float().cpu()


def half_precision_engine(network: YNet, device: torch.device) -> HalfPrecisionEngine:
    """The engine for `network` (already on `device`), checked against its fp32 outputs; raises if it differs."""
    # torch's stubs omit Module.to's memory_format keyword, which the runtime accepts.
    engine = HalfPrecisionEngine(network.to(memory_format=torch.channels_last), device)  # type: ignore[call-overload]
    check(engine, MIN_COSINE)
    return engine
