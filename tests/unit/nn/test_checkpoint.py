import json
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ynet_db.nn.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    CheckpointInfo,
    content_hash,
    differing_tensors,
    load_checkpoint,
    save_checkpoint,
)
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel, build_network, head_tensors
from ynet_db.nn.tags import TagVocabulary


class Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pwned",))


def trained_checkpoint(path: Path, config: ModelConfig) -> None:
    vocabulary = TagVocabulary(("category:dress", "color:red"))
    network = build_network(config, len(vocabulary))
    base = build_network(config, len(vocabulary)).state_dict()
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        network.tag_attention.weight.normal_(generator=generator)
        network.shop._conv_head.weight.add_(0.01)
        network.street_projection.linear.weight.normal_(generator=generator)
    info = CheckpointInfo(config, vocabulary, "data-hash", {"top_k": {"1": 0.5}}, rerank_measured_to_help=True)
    save_checkpoint(path, info, differing_tensors(network.state_dict(), base))


def test_round_trip_gives_identical_outputs(tmp_path: Path, small_config: ModelConfig) -> None:
    trained_checkpoint(tmp_path / "ckpt", small_config)
    first = RetrievalModel.load(tmp_path / "ckpt")
    second = RetrievalModel.load(tmp_path / "ckpt" / "model.safetensors")
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    tags = [["color:red"], ["category:dress", "color:teal"]]
    assert first.version == second.version and first.version.startswith("test-small@")
    assert torch.equal(first.encode_shop(pixels, tags).vectors, second.encode_shop(pixels, tags).vectors)
    assert first.encode_shop(pixels, tags).unknown_tags == [0, 1]
    assert first.rerank_measured_to_help is True
    stored = load_checkpoint(tmp_path / "ckpt").tensors
    assert not any(name.startswith("trunk.") for name in stored)  # only what differs is stored
    assert "shop._conv_head.weight" in stored and "street._conv_head.weight" not in stored


def test_a_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="pickle"):
        RetrievalModel.load(path)
    torch_file = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, torch_file)
    with pytest.raises(CheckpointError, match="pickle"):
        RetrievalModel.load(torch_file)


def test_a_checkpoint_directory_carrying_a_pickle_is_refused(tmp_path: Path, small_config: ModelConfig) -> None:
    trained_checkpoint(tmp_path / "ckpt", small_config)
    (tmp_path / "ckpt" / "extra.bin").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="contains a pickle file extra.bin"):
        RetrievalModel.load(tmp_path / "ckpt")


def test_garbage_and_altered_checkpoints_are_refused(tmp_path: Path, small_config: ModelConfig) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(garbage)
    trained_checkpoint(tmp_path / "ckpt", small_config)
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_checkpoint(tmp_path / "ckpt")


def _header_length(path: Path) -> int:
    with path.open("rb") as handle:
        return int.from_bytes(handle.read(8), "little")


def test_a_safetensors_header_whose_length_starts_with_0x80_is_not_taken_for_a_pickle(
    tmp_path: Path, small_config: ModelConfig
) -> None:
    """1 genuine checkpoint in 32 has a header length whose first byte is 0x80, pickle's protocol byte."""
    vocabulary = TagVocabulary(("color:red",))
    tensors = head_tensors(build_network(small_config, len(vocabulary)))
    path, padding = tmp_path / "model.safetensors", 0
    while (length := _header_length(path) if path.exists() else 0) != 0x1380:
        padding += max(1, 0x1380 - length) if length < 0x1380 else -1
        save_checkpoint(path, CheckpointInfo(small_config, vocabulary, metrics={"pad": "x" * padding}), tensors)
    assert path.read_bytes()[:1] == b"\x80"
    assert RetrievalModel.load(path).version == load_checkpoint(path).version


def test_a_pickle_whose_first_bytes_read_as_a_header_length_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x13\x00\x00\x00\x00\x00\x00" + pickle.dumps(Exploit()) + b"\x00" * 0x1400)
    with pytest.raises(CheckpointError, match="it is a pickle"):
        load_checkpoint(path)


def test_a_checkpoint_lacking_tensors_the_config_needs_is_refused(tmp_path: Path, small_config: ModelConfig) -> None:
    vocabulary = TagVocabulary(("color:red",))
    tensors = head_tensors(build_network(small_config, len(vocabulary)))
    del tensors["tag_attention.weight"], tensors["street_projection.linear.weight"]
    save_checkpoint(tmp_path / "ckpt", CheckpointInfo(small_config, vocabulary), tensors)
    with pytest.raises(CheckpointError) as refused:
        RetrievalModel.load(tmp_path / "ckpt")
    assert str(refused.value) == (
        f"checkpoint {tmp_path / 'ckpt'}: lacks tensors the config needs: "
        "street_projection.linear.weight, tag_attention.weight"
    )


def _with_config(path: Path, **changes: object) -> None:
    """Rewrite a genuine checkpoint's config, with a content hash that matches, as a careless tool would."""
    with safe_open(str(path), framework="pt") as handle:
        description = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    description["config"].update(changes)
    config = SimpleNamespace(to_dict=lambda: description["config"])
    description["content_hash"] = content_hash(config, TagVocabulary(tuple(description["tags"])), tensors)  # type: ignore[arg-type]
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(description)})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"input_size": 60000}, "input_size 60000: expected a whole number from 32 to 1024"),
        ({"input_size": 96}, "input_size 96 and map_size 2: input_size must be a multiple of 32 and map_size"),
        ({"embedding_dim": "32"}, "embedding_dim '32': expected a whole number from 1 to 2000"),
        ({"name": "x\u001b]0;owned\u0007"}, "name 'x\\x1b]0;owned\\x07': 1 to 100 characters, no control characters"),
        ({"std": [0.5, 0.0, 0.5]}, "std (0.5, 0.0, 0.5): each channel's must be positive"),
        ({"trunk_blocks": 99}, "trunk_blocks 99: expected a whole number from 0 to 16"),
    ],
)
def test_a_config_out_of_bounds_is_refused(
    tmp_path: Path, small_config: ModelConfig, changes: dict[str, object], reason: str
) -> None:
    trained_checkpoint(tmp_path / "ckpt", small_config)
    _with_config(tmp_path / "ckpt" / "model.safetensors", **changes)
    with pytest.raises(CheckpointError, match=re.escape(f"malformed description ({reason}")):
        RetrievalModel.load(tmp_path / "ckpt")


def test_a_checkpoint_path_the_file_system_refuses_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"cannot be read \(File name too long\)"):
        load_checkpoint(tmp_path / ("x" * 300 + ".safetensors"))
