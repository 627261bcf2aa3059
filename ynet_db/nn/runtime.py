"""Which runtime serves a model's encoders: ONNX Runtime on a CPU where it is installed, else PyTorch.

    model = accelerate(model, settings.runtime, graph_cache(settings), threads=2)
    model.runtime                       # 'onnxruntime' or 'torch'

Serving code loads through `ynet_db.models.serving`, which calls `accelerate` here.

YNET_RUNTIME=auto (the default) takes ONNX Runtime for a CPU model when the package is installed, and
PyTorch under fp16 autocast for a GPU model (runtime_gpu.py); `onnxruntime` insists on ONNX Runtime (an
error when the package is missing); `torch` is the fp32 reference and never imports ONNX Runtime.
Training, checkpoints and the registry never go through this module: it only changes where an already
loaded model's `encode_shop` and `encode_street` run.

The graphs live in `<data dir>/onnx`, named by a hash of the network's tensors (see onnx_export.py).
A graph that does not load, or whose outputs differ from PyTorch's on the check input, is exported
again once; if that one fails too the model stays on PyTorch, and the log says why. A slower worker is
better than one that does not start, or one whose embeddings do not match the catalogue's.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from ynet_db.config import Settings
from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.onnx_engine import GraphMismatch, OnnxEngine, verified_engine
from ynet_db.nn.onnx_export import GRAPHS, cached_graph, graph_path, network_digest
from ynet_db.nn.runtime_gpu import HalfPrecisionEngine, half_precision_engine
from ynet_db.nn.runtime_threads import inference_threads, leave_cores_to_onnxruntime

log = logging.getLogger(__name__)


class RuntimeUnavailable(RuntimeError):
    """YNET_RUNTIME asks for a runtime this installation or device cannot provide."""


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_runtime(setting: str, device: torch.device) -> str:
    """'onnxruntime', 'torch-fp16' or 'torch' for YNET_RUNTIME's value on this device."""
    if setting == "torch":
        return "torch"
    if setting == "auto" and device.type == "cuda":
        return "torch-fp16"
    if setting == "auto":
        return "onnxruntime" if device.type == "cpu" and onnxruntime_installed() else "torch"
    if not onnxruntime_installed():
        raise RuntimeUnavailable("YNET_RUNTIME=onnxruntime, but the onnxruntime package is not installed")
    if device.type != "cpu":
        raise RuntimeUnavailable(f"YNET_RUNTIME=onnxruntime runs on the CPU; this model is on {device}")
    return "onnxruntime"


def graph_cache(settings: Settings) -> Path:
    return settings.data_dir / "onnx"


def accelerate(model: RetrievalModel, setting: str, cache_dir: Path, threads: int | None = None) -> RetrievalModel:
    """Put `model`'s encoders on the runtime YNET_RUNTIME chooses; fp32 PyTorch stays where that one fails."""
    runtime = resolve_runtime(setting, model.device)
    if runtime == "onnxruntime":
        threads = threads or inference_threads()
        model.engine = onnx_engine(model, cache_dir, threads)
        if model.engine is not None:
            leave_cores_to_onnxruntime(threads)
    elif runtime == "torch-fp16":
        model.engine = fp16_engine(model)
    return model


def fp16_engine(model: RetrievalModel) -> HalfPrecisionEngine | None:
    try:
        return half_precision_engine(model.network, model.device)
    except GraphMismatch as error:
        log.warning("model %s stays in fp32: fp16 %s", model.version, error)
        return None


def onnx_engine(model: RetrievalModel, cache_dir: Path, threads: int) -> OnnxEngine | None:
    """The verified engine for `model`, exporting its graphs on first use; None (and a log line) if it fails."""
    digest = network_digest(model.network)
    paths = {kind: graph_path(cache_dir, model.version, kind, digest) for kind in GRAPHS}
    problems: list[str] = []
    for fresh in (False, True):
        try:
            graphs = {kind: cached_graph(model.network, kind, path, fresh=fresh) for kind, path in paths.items()}
            return verified_engine(model.network, graphs["shop"], graphs["street"], threads)
        except Exception as error:  # a corrupt file, a failed export, a mismatch: all leave PyTorch serving
            problems.append(f"{'re-exported' if fresh else 'cached'} graph: {type(error).__name__}: {error}")
    log.warning("model %s stays on PyTorch: %s", model.version, "; ".join(problems))
    return None
