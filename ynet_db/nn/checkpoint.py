"""Checkpoints: safetensors weights plus a JSON description, identified by a content hash.

A checkpoint is one `.safetensors` file (or a directory holding `model.safetensors`). Its metadata
carries the model config, the tag vocabulary, the training-data hash, metrics and whether the
re-ranker was measured to help. Only what differs from the pretrained backbone is stored: the
branches' weights, the projections and the attention heads; the shared trunk comes from the
pretrained file, whose sha256 the config pins.

Loading fails closed. Nothing is ever unpickled: a pickle or `torch.save` file, a directory with
one in it, a file that safetensors cannot parse, a hash that does not match its content, or tensors
that do not fit the network are all refused with a `CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ynet_db.nn.config import ModelConfig
from ynet_db.nn.tags import TagVocabulary

FORMAT = "ynet-db-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
METADATA_KEY = "ynet-db"
# Keys copied verbatim from the pretrained backbone; stored only when training changed them.
BACKBONE_PREFIXES = ("trunk.", "street.", "shop.")
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch.save's zip container


class CheckpointError(RuntimeError):
    """A checkpoint that ynet-db refuses to load; the message names the file and the reason."""


@dataclass(frozen=True)
class CheckpointInfo:
    config: ModelConfig
    vocabulary: TagVocabulary
    training_data_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    rerank_measured_to_help: bool = False


@dataclass(frozen=True)
class Checkpoint:
    info: CheckpointInfo
    tensors: dict[str, torch.Tensor]
    content_hash: str

    @property
    def version(self) -> str:
        return f"{self.info.config.name}@{self.content_hash[:8]}"


def content_hash(config: ModelConfig, vocabulary: TagVocabulary, tensors: Mapping[str, torch.Tensor]) -> str:
    """What determines the embeddings: config, vocabulary and stored weights (not metrics)."""
    digest = hashlib.sha256()
    described = {"config": config.to_dict(), "tags": list(vocabulary.tags)}
    digest.update(json.dumps(described, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def differing_tensors(state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The part of `state` a checkpoint must store: heads always, backbone copies only if changed."""
    stored: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        from_backbone = name.startswith(BACKBONE_PREFIXES) and name in base
        if from_backbone and torch.equal(tensor.cpu(), base[name].cpu()):
            continue
        stored[name] = tensor.detach().to("cpu").contiguous().clone()
    return stored


def save_checkpoint(path: Path, info: CheckpointInfo, tensors: Mapping[str, torch.Tensor]) -> Checkpoint:
    """Write to `path` (a `.safetensors` file, or a directory that gets `model.safetensors`)."""
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    digest = content_hash(info.config, info.vocabulary, tensors)
    description = {
        "format": FORMAT,
        "config": info.config.to_dict(),
        "tags": list(info.vocabulary.tags),
        "training_data_hash": info.training_data_hash,
        "metrics": info.metrics,
        "rerank_measured_to_help": info.rerank_measured_to_help,
        "content_hash": digest,
    }
    target = weights_file(path, creating=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    save_file(tensors, str(partial), metadata={METADATA_KEY: json.dumps(description, sort_keys=True)})
    partial.replace(target)  # a crash mid-write never leaves a half checkpoint under the real name
    return Checkpoint(info, tensors, digest)


def weights_file(path: Path, *, creating: bool = False) -> Path:
    if path.suffix == ".safetensors":
        return path
    if creating or path.is_dir():
        return path / WEIGHTS_FILE
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify a checkpoint; raises CheckpointError for anything but a genuine one."""
    if path.is_dir():
        refuse_foreign_files(path)
    target = weights_file(path)
    if not target.is_file():
        raise CheckpointError(f"checkpoint {target}: no such file")
    refuse_pickle(target)
    try:
        with safe_open(str(target), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"checkpoint {target}: not a readable safetensors file ({error})") from error
    info, recorded_hash = parse_description(target, metadata)
    actual = content_hash(info.config, info.vocabulary, tensors)
    if actual != recorded_hash:
        raise CheckpointError(f"checkpoint {target}: content hash mismatch (file altered?)")
    return Checkpoint(info, tensors, actual)


def refuse_pickle(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(4)
    if any(head.startswith(magic) for magic in PICKLE_MAGIC):
        raise CheckpointError(
            f"refusing to load {path}: it is a pickle (torch.save) file, which can run code when "
            "loaded; ynet-db loads only safetensors checkpoints"
        )


def refuse_foreign_files(directory: Path) -> None:
    """A checkpoint directory must not carry pickles beside its weights: someone may load them."""
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and entry.suffix != ".safetensors" and entry.suffix not in (".json", ".png", ".txt"):
            with entry.open("rb") as handle:
                head = handle.read(4)
            if any(head.startswith(magic) for magic in PICKLE_MAGIC):
                raise CheckpointError(
                    f"refusing to load checkpoint {directory}: it contains a pickle file {entry.name}"
                )
        elif entry.is_file() and entry.suffix == ".safetensors":
            refuse_pickle(entry)


def parse_description(path: Path, metadata: Mapping[str, str]) -> tuple[CheckpointInfo, str]:
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"checkpoint {path}: no ynet-db description in its metadata")
    try:
        description = json.loads(metadata[METADATA_KEY])
        if description.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path}: format {description.get('format')!r}, expected {FORMAT!r}")
        info = CheckpointInfo(
            config=ModelConfig.from_dict(description["config"]),
            vocabulary=TagVocabulary(tuple(description["tags"])),
            training_data_hash=description.get("training_data_hash"),
            metrics=dict(description.get("metrics") or {}),
            rerank_measured_to_help=bool(description.get("rerank_measured_to_help", False)),
        )
        return info, str(description["content_hash"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: malformed description ({error})") from error
