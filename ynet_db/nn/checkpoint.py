"""Checkpoints: safetensors weights plus a JSON description, identified by a content hash.

A checkpoint is one `.safetensors` file (or a directory holding `model.safetensors`). Its metadata
carries the model config, the tag vocabulary, the training-data hash, metrics and whether the
re-ranker was measured to help. Only what differs from the pretrained backbone is stored: the
branches' weights, the projections and the attention heads; the shared trunk comes from the
pretrained file, whose sha256 the config pins.

Loading fails closed. Nothing is ever unpickled: a pickle or `torch.save` file, a directory with
one in it, a file that safetensors cannot parse, a hash that does not match its content, a config out
of bounds, and tensors that do not fit the network or that it lacks are all refused with a
`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit


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
    target = weights_file(path)
    try:
        if path.is_dir():
            refuse_foreign_files(path)
        if not target.is_file():
            raise CheckpointError(f"checkpoint {target}: no such file")
        refuse_pickle(target)
    except OSError as error:  # unreadable, or a name too long for the file system
        raise CheckpointError(f"checkpoint {path}: cannot be read ({error.strerror or error})") from error
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
    if _is_pickle(path):
        raise CheckpointError(
            f"refusing to load {path}: it is a pickle (torch.save) file, which can run code when "
            "loaded; ynet-db loads only safetensors checkpoints"
        )


def _is_pickle(path: Path) -> bool:
    """True for a pickle or torch.save file; never for a safetensors file, whatever its first byte.

    A safetensors file starts with its header's length, little-endian: a header of 0x1380 bytes starts
    with 0x80, pickle's protocol byte. So the header is parsed first and the magic is looked at only
    when that fails. Anything else that is not safetensors is refused later by the parser itself.
    """
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) == 8 and _has_safetensors_header(handle, int.from_bytes(head, "little")):
            return False
    return any(head.startswith(magic) for magic in PICKLE_MAGIC)


def _has_safetensors_header(handle: BinaryIO, length: int) -> bool:
    """Whether the `length` bytes after the 8 already read are a JSON object, as a safetensors header is."""
    if not 2 <= length <= SAFETENSORS_MAX_HEADER:
        return False
    header = handle.read(length)
    if len(header) < length or not header.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(header), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return False


def refuse_foreign_files(directory: Path) -> None:
    """A checkpoint directory must not carry pickles beside its weights: someone may load them."""
    for entry in sorted(directory.iterdir()):
        if not entry.is_file() or entry.suffix in (".json", ".png", ".txt"):
            continue
        if entry.suffix == ".safetensors":
            refuse_pickle(entry)
        elif _is_pickle(entry):
            raise CheckpointError(f"refusing to load checkpoint {directory}: it contains a pickle file {entry.name}")


def refuse_incomplete(source: str, needed: Iterable[str], tensors: Mapping[str, torch.Tensor]) -> None:
    """A checkpoint must carry every tensor that is not a copy of the backbone; a missing one would load as
    the network's initial value and embed with weights nobody trained, under the checkpoint's name."""
    missing = sorted(name for name in needed if not name.startswith(BACKBONE_PREFIXES) and name not in tensors)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"checkpoint {source}: lacks tensors the config needs: {shown}")


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
