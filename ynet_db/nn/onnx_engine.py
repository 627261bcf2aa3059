"""The shop and street encoders on ONNX Runtime (CPU), checked against the PyTorch network they came from.

`RetrievalModel` hands a batch to its engine when the engine `handles` it (CPU float32 pixels of the
config's pixel shape); anything else runs in PyTorch. An engine is only made through `verified_engine`,
which compares both graphs with the network on a fixed input and refuses them below `MIN_COSINE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ynet_db.nn.onnx_export import INPUTS, tag_query
from ynet_db.nn.ynet import YNet

MIN_COSINE = 0.9999
CHECK_BATCH = 2


class GraphMismatch(RuntimeError):
    """An ONNX graph whose outputs differ from the PyTorch network's on the check input."""


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with `threads` intra-op threads and no thread spinning.

    Spinning threads keep polling for work after a run: with several worker processes on few cores
    they take the CPU from the process that has work (and from its database writer thread).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxEngine:
    network: YNet
    """The PyTorch network the graphs were exported from (its tag attention weight makes the tag query)."""
    shop: Any
    street: Any
    threads: int
    name: str = "onnxruntime"

    def handles(self, pixels: torch.Tensor) -> bool:
        return (
            pixels.device.type == "cpu"
            and pixels.dtype == torch.float32
            and tuple(pixels.shape[1:]) == self.network.config.scales.pixel_shape
            and pixels.shape[0] > 0
        )

    def shop_vectors(self, pixels: torch.Tensor, multi_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As `YNet.pixels_to_shop(pixels, multi_hot)`: (vectors [B, D], weights [B, L])."""
        inputs = dict(zip(INPUTS["shop"], (_array(pixels), _array(tag_query(self.network, multi_hot)))))
        vectors, weights = self.shop.run(None, inputs)
        return torch.from_numpy(vectors), torch.from_numpy(weights)

    def street_maps(self, pixels: torch.Tensor) -> torch.Tensor:
        """As `YNet.pixels_to_street(pixels)`: [B, L, D]."""
        (maps,) = self.street.run(None, {"pixels": _array(pixels)})
        return torch.from_numpy(maps)


def _array(tensor: torch.Tensor) -> Any:
    return tensor.detach().contiguous().numpy()


def verified_engine(network: YNet, shop: Path, street: Path, threads: int) -> OnnxEngine:
    """Load both graphs and compare them with `network` on a fixed input; raise if they are not the same."""
    engine = OnnxEngine(network, session(shop, threads), session(street, threads), threads)
    check(engine)
    return engine


class Engine(Protocol):
    """What `RetrievalModel` hands its encoders to (the ONNX engine here, the GPU one in runtime_gpu.py)."""

    network: YNet
    name: str

    def handles(self, pixels: torch.Tensor) -> bool: ...

    def shop_vectors(self, pixels: torch.Tensor, multi_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def street_maps(self, pixels: torch.Tensor) -> torch.Tensor: ...


@torch.inference_mode()
def check(engine: Engine, min_cosine: float = MIN_COSINE) -> None:
    """Raise `GraphMismatch` unless shop vectors, tag attention and street maps match the fp32 network's."""
    network = engine.network
    pixels, multi_hot = check_input(network)
    device = next(network.parameters()).device
    vectors, weights = network.pixels_to_shop(pixels.to(device), multi_hot.to(device))
    maps = network.pixels_to_street(pixels.to(device))
    got_vectors, got_weights = engine.shop_vectors(pixels, multi_hot)
    pairs = {
        "shop vectors": (got_vectors, vectors),
        "tag attention weights": (got_weights, weights),
        "street maps": (engine.street_maps(pixels), maps),
    }
    for what, (got, expected) in pairs.items():
        if got.shape != expected.shape:
            raise GraphMismatch(f"{what}: shape {tuple(got.shape)}, PyTorch gives {tuple(expected.shape)}")
        cosine = float(F.cosine_similarity(got.float().cpu(), expected.float().cpu(), dim=-1).min())
        if not cosine >= min_cosine:  # also refuses NaN
            raise GraphMismatch(f"{what}: cosine {cosine:.6f} to PyTorch's, below {min_cosine}")


def check_input(network: YNet) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed pixels and tags: seeded noise of the model's pixel shape, and every other tag of the vocabulary on."""
    shape = network.config.scales.pixel_shape
    pixels = torch.randn(CHECK_BATCH, *shape, generator=torch.Generator().manual_seed(12))
    num_tags = network.tag_attention.weight.shape[1]
    multi_hot = torch.zeros(CHECK_BATCH, num_tags)
    multi_hot[0, 0::2] = 1.0
    multi_hot[1, 1::2] = 1.0
    return pixels, multi_hot
