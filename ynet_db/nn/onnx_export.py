"""The serving network as two ONNX graphs (shop and street encoders), exported from the loaded model.

    path = cached_graph(network, "shop", graph_path(cache_dir, model.version, "shop", network_digest(network)))

Each graph holds the shared trunk and its own branch, with a dynamic batch axis; the spatial size is
the config's pixel shape (`input_size` square, or the two-scale canvas, which the graph cuts into its
two images: nn/scales.py), and the 'SAME' padding is computed from it at export. The shop graph takes
the tag attention's query (the multi-hot tags times the attention's weight, [B, C]) instead of the
tags themselves: a model without tags would otherwise need a zero-width input, and the product is one
small matrix multiply that stays in PyTorch. Normalisation also stays outside, as in `RetrievalModel`.

A graph's file name carries a hash of every tensor it was exported from and of the export recipe, so
a changed checkpoint, or a change of how graphs are made, never meets a stale file. Several worker
processes may start at once: one exports under a file lock, writes to a temporary name and renames
it into place, and the others wait for the lock and load the finished file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import fasteners
import torch
from torch import nn

from ynet_db.nn.ynet import YNet

log = logging.getLogger(__name__)

GraphKind = Literal["shop", "street"]
GRAPHS: tuple[GraphKind, ...] = ("shop", "street")
OPSET = 17
RECIPE = "ynet-onnx/3"
"""Bumped whenever the wrappers below change what a graph computes."""
INPUTS: dict[GraphKind, tuple[str, ...]] = {"shop": ("pixels", "tag_query"), "street": ("pixels",)}
OUTPUTS: dict[GraphKind, tuple[str, ...]] = {"shop": ("vectors", "weights"), "street": ("maps",)}


class ShopGraph(nn.Module):
    """pixels [B, 3, H, W], tag query [B, C] -> (shop vectors before normalisation [B, D], weights [B, L])."""

    def __init__(self, network: YNet):
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor, tag_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.network.branch_maps(pixels, self.network.shop)
        pooled, weights = self.network.tag_attention.pool(maps, torch.einsum("blc,bc->bl", maps, tag_query))
        return self.network.shop_projection(pooled), weights


class StreetGraph(nn.Module):
    """pixels [B, 3, H, W] -> street maps in the embedding space [B, L, D]."""

    def __init__(self, network: YNet):
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.pixels_to_street(pixels)


def tag_query(network: YNet, multi_hot: torch.Tensor) -> torch.Tensor:
    """The shop graph's second input: the tags' embedding that scores each location (TagAttention)."""
    return multi_hot.to(torch.float32) @ network.tag_attention.weight.detach().to(torch.float32).t()


def network_digest(network: YNet) -> str:
    """A hash of every tensor of the network and of the export recipe: what a graph file is named by."""
    digest = hashlib.sha256(f"{RECIPE}|opset {OPSET}|torch {torch.__version__}".encode())
    scales = network.config.scales
    if scales.several:  # the same tensors make another graph at other sizes (one size: named as before)
        digest.update(f"|sizes {scales.sizes}".encode())
    for name, tensor in sorted(network.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def graph_path(cache_dir: Path, label: str, kind: GraphKind, digest: str) -> Path:
    """`<label>-<kind>-<digest[:16]>.onnx`, the label (a model version) reduced to file-name characters."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:80]
    return cache_dir / f"{readable}-{kind}-{digest[:16]}.onnx"


def export_graph(network: YNet, kind: GraphKind, path: Path) -> None:
    """Write the graph of `kind` to `path` (a temporary name first, so a reader never sees half a file)."""
    pixels = torch.zeros(2, *network.config.scales.pixel_shape)
    wrapper: nn.Module = ShopGraph(network) if kind == "shop" else StreetGraph(network)
    query = torch.zeros(2, network.config.map_channels)
    args: tuple[torch.Tensor, ...] = (pixels, query) if kind == "shop" else (pixels,)
    names = INPUTS[kind] + OUTPUTS[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        with warnings.catch_warnings():
            # The tracer warns that the padding sizes become constants: they are, for the fixed input size.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper.eval(),
                args,
                temporary,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, and it has handled this network
                opset_version=OPSET,
                input_names=list(INPUTS[kind]),
                output_names=list(OUTPUTS[kind]),
                dynamic_axes={name: {0: "batch"} for name in names},
            )
        drop_unset_trailing_inputs(Path(temporary))
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def drop_unset_trailing_inputs(path: Path) -> None:
    """Remove the empty names the exporter writes for optional inputs left unset (Pad's constant value).

    An empty name means "not given" in ONNX, but ONNX Runtime fuses a Pad into the convolution after it
    only when every input it has is a constant: with the empty one each 'SAME' convolution kept a Pad,
    which copied its input and broke the blocked memory layout around it (a third of a batch-1 run).
    """
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        while node.input and not node.input[-1]:
            node.input.pop()
    onnx.save(model, str(path))


def cached_graph(network: YNet, kind: GraphKind, path: Path, *, fresh: bool = False) -> Path:
    """`path` (see `graph_path`), exported first if it is not there, or replaced if `fresh`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with fasteners.InterProcessLock(str(path.with_name(path.name + ".lock"))):
        if fresh or not path.is_file():
            export_graph(network, kind, path)
            log.info("exported the %s graph to %s", kind, path)
    return path
