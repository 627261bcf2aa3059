"""The serving facade: what workers and search call to embed shop images and re-rank street queries.

    model = RetrievalModel.load_default(device="cpu")     # pretrained network, GeM pooling, no trained heads
    model = RetrievalModel.load(path, device="cpu")       # a checkpoint; fails closed
    shop = model.encode_shop(pixels, tags)                # .vectors [B, D], L2-normalised, CPU float32
    street = model.encode_street(pixels)                  # .vectors [B, D], .maps [B, L, D]
    scores = model.rerank(street.maps[0], candidates)     # [N], higher is better
    scores = model.free_rerank(street.maps[0], candidates, beta=5.0)  # the training-free form

Load once per worker process and keep it: loading re-reads and re-hashes the backbone weights.
Serving code loads through `ynet_db.models.serving`, which may set `engine` so that the two
encoders run on ONNX Runtime (or in fp16 on a GPU); the network stays the reference and runs whatever
the engine does not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image

from ynet_db.nn.attention import activation_mask, free_context, power_mean
from ynet_db.nn.backbone import pretrained_lite0
from ynet_db.nn.calibration import ContextCalibration
from ynet_db.nn.checkpoint import (
    BACKBONE_PREFIXES,
    Checkpoint,
    CheckpointError,
    CheckpointInfo,
    content_hash,
    load_checkpoint,
    refuse_incomplete,
)
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.tags import TagVocabulary
from ynet_db.nn.ynet import YNet

if TYPE_CHECKING:
    from ynet_db.nn.onnx_engine import Engine

CALIBRATIONS = Path(__file__).resolve().parent.parent / "checkpoints" / "calibrations.json"
"""Shipped models' context calibrations by version (bench/default_path.py writes the default's)."""
DEFAULT_CONFIG = ModelConfig(pooling_power=3.0)
"""The shipped default: GeM pooling (p = 3) won over average pooling on the generated benchmark's
validation split (bench/default_path.py); with average pooling (`ModelConfig()`) it is another version."""
METRICS_KEY = "context_rerank"
"""Where a checkpoint's metrics hold its context calibration (metrics are not part of its version)."""


@dataclass(frozen=True)
class ShopEncoding:
    vectors: torch.Tensor
    """Tensor[B, D] float32, L2-normalised, on the CPU: what the database stores."""
    attention: torch.Tensor
    """Tensor[B, L]: the tag attention's weights over the shop map's locations."""
    unknown_tags: list[int]
    """Per image, how many of its tags the model's vocabulary does not know (ignored)."""
    average_pooled: list[bool]
    """Per image, True when no tag was known, so the embedding is the plain average-pooled one."""


@dataclass(frozen=True)
class StreetEncoding:
    vectors: torch.Tensor
    """Tensor[B, D] float32, L2-normalised average-pooled query vectors (for the index prefilter)."""
    maps: torch.Tensor
    """Tensor[B, L, D]: the query maps, kept for CtxYNet re-ranking."""


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_network(config: ModelConfig, num_tags: int) -> YNet:
    """The pretrained network in this config's structure, heads at their (deterministic) start."""
    backbone = pretrained_lite0(expected_sha256=config.weights_sha256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the MLP context form has random layers; same start on every load
        network = YNet(config, backbone, num_tags)
    return network.eval()


def load_tensors(network: YNet, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    state = network.state_dict()
    refuse_incomplete(source, state, tensors)
    for name, tensor in tensors.items():
        if name not in state:
            raise CheckpointError(f"checkpoint {source}: tensor {name!r} is not part of the network")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint {source}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"the network needs {tuple(state[name].shape)}"
            )
        state[name] = tensor
    network.load_state_dict(state, strict=True)


def head_tensors(network: YNet) -> dict[str, torch.Tensor]:
    """The tensors that are not copies of the backbone (always part of a checkpoint's content)."""
    return {k: v for k, v in network.state_dict().items() if not k.startswith(BACKBONE_PREFIXES)}


class RetrievalModel:
    """A loaded Y-Net / TagYNet / CtxYNet with its vocabulary, identity and measured facts."""

    def __init__(self, network: YNet, info: CheckpointInfo, version: str, device: str | torch.device = "cpu"):
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.info = info
        self.version = version
        self.engine: Engine | None = None
        """Runs the encoders when set (ONNX Runtime, or fp16 on a GPU: nn/runtime.py); the network is the reference."""
        self.context_calibration = own_calibration(info, version)
        """The training-free context re-rank's beta and evidence for this version, if it was measured."""

    @classmethod
    def load_default(cls, device: str | torch.device = "cpu", config: ModelConfig | None = None) -> RetrievalModel:
        """The pretrained network itself (`DEFAULT_CONFIG` unless given): identity projection, GeM pooling,
        every attention head at its uniform start."""
        config = config or DEFAULT_CONFIG
        vocabulary = TagVocabulary(())
        network = build_network(config, len(vocabulary))
        digest = content_hash(config, vocabulary, head_tensors(network))
        info = CheckpointInfo(config=config, vocabulary=vocabulary)
        return cls(network, info, f"{config.name}@{digest[:8]}", device)

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device = "cpu") -> RetrievalModel:
        checkpoint = load_checkpoint(Path(path))
        return cls.from_checkpoint(checkpoint, device, source=str(path))

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: str | torch.device = "cpu", source: str = ""
    ) -> RetrievalModel:
        info = checkpoint.info
        network = build_network(info.config, len(info.vocabulary))
        load_tensors(network, checkpoint.tensors, source or checkpoint.version)
        return cls(network, info, checkpoint.version, device)

    @property
    def config(self) -> ModelConfig:
        return self.info.config

    @property
    def name(self) -> str:
        return self.info.config.name

    @property
    def embedding_dim(self) -> int:
        return self.info.config.embedding_dim

    @property
    def vocabulary(self) -> TagVocabulary:
        return self.info.vocabulary

    @property
    def runtime(self) -> str:
        """What runs `encode_shop` and `encode_street`: 'onnxruntime', 'torch-fp16' (a GPU) or 'torch'."""
        return "torch" if self.engine is None else self.engine.name

    @property
    def rerank_measured_to_help(self) -> bool:
        """Search re-ranks by default only when this is True (measured on held-out data): the learned
        re-ranker was, or the training-free one at its calibrated beta was."""
        calibration = self.context_calibration
        return self.info.rerank_measured_to_help or (calibration is not None and calibration.helps)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.config.preprocess(image)

    @torch.inference_mode()
    def encode_shop(self, pixels: torch.Tensor, tags: Sequence[Sequence[str]]) -> ShopEncoding:
        if len(tags) != pixels.shape[0]:
            raise ValueError(f"{pixels.shape[0]} images but {len(tags)} tag lists")
        batch = self.vocabulary.encode(tags)
        if self.engine is not None and self.engine.handles(pixels):
            vectors, weights = self.engine.shop_vectors(pixels, batch.multi_hot)
        else:
            vectors, weights = self.network.pixels_to_shop(pixels.to(self.device), batch.multi_hot.to(self.device))
        return ShopEncoding(
            vectors=F.normalize(vectors.float(), dim=-1).cpu(),
            attention=weights.float().cpu(),
            unknown_tags=batch.unknown,
            average_pooled=batch.without_known_tags,
        )

    @torch.inference_mode()
    def encode_street(self, pixels: torch.Tensor) -> StreetEncoding:
        if self.engine is not None and self.engine.handles(pixels):
            maps = self.engine.street_maps(pixels)
        else:
            maps = self.network.pixels_to_street(pixels.to(self.device)).float()
        pooled = power_mean(maps, self.query_pooling(maps)[:, None], self.config.pooling_power)[:, 0]
        return StreetEncoding(vectors=F.normalize(pooled, dim=-1).cpu(), maps=maps.cpu())

    def query_pooling(self, maps: torch.Tensor) -> torch.Tensor:
        """The first stage's pooling weights [B, L] over query maps [B, L, D]."""
        if self.config.query_mask:
            return activation_mask(maps)
        return torch.full(maps.shape[:2], 1.0 / maps.shape[1], device=maps.device, dtype=maps.dtype)

    @torch.inference_mode()
    def rerank(
        self, street_map: torch.Tensor, candidates: torch.Tensor, calibration: ContextCalibration | None = None
    ) -> torch.Tensor:
        """Re-rank scores of N stored candidate vectors for one query map [L, D]; higher is better.

        With `calibration` (a shop's own, from the registry), the training-free re-rank at its beta.
        Otherwise the learned CtxYNet where it was measured to help, else the training-free one where
        this version was calibrated, else the learned one (at its start, that keeps the first stage's order).
        """
        chosen = calibration
        if chosen is None and not self.info.rerank_measured_to_help:
            chosen = self.context_calibration
        if chosen is not None:
            return self.free_rerank(street_map, candidates, chosen.beta)
        scores, _ = self.network.context_scores(
            street_map.to(self.device)[None], candidates.to(self.device, torch.float32)[None]
        )
        return scores[0].cpu()

    @torch.inference_mode()
    def free_rerank(self, street_map: torch.Tensor, candidates: torch.Tensor, beta: float) -> torch.Tensor:
        """The training-free context re-rank (CtxYNet with no parameters) at `beta`; higher is better.

        Scored as the learned one is: minus the squared distance of the normalised, candidate-weighted
        query feature to the normalised candidate.
        """
        maps = street_map.to(self.device, torch.float32)[None]
        stored = F.normalize(candidates.to(self.device, torch.float32), dim=-1)[None]
        queries, _ = free_context(maps, stored, beta, self.config.pooling_power, self.query_pooling(maps))
        # -|q/|q| - c|^2 = 2 q.c / |q| - 2 for a unit c: two passes over [N, D] where the difference took four.
        return (2 * (queries * stored).sum(-1) / queries.norm(dim=-1).clamp(min=1e-12) - 2)[0].cpu()

    @torch.inference_mode()
    def context_weights(self, street_map: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The query's attention [N, L] over its map given each candidate (for attention maps)."""
        _, weights = self.network.context_scores(
            street_map.to(self.device)[None], candidates.to(self.device, torch.float32)[None]
        )
        return weights[0].cpu()


def own_calibration(info: CheckpointInfo, version: str) -> ContextCalibration | None:
    """A checkpoint's calibration from its metrics, else a shipped one recorded for exactly this version."""
    stored = info.metrics.get(METRICS_KEY)
    if stored is None and CALIBRATIONS.is_file():
        stored = json.loads(CALIBRATIONS.read_text(encoding="utf-8")).get(version)
    return None if stored is None else ContextCalibration.from_dict(stored)
