import pickle
from pathlib import Path

import pytest
import torch

from ynet_db.nn.checkpoint import CheckpointError, CheckpointInfo, differing_tensors, load_checkpoint, save_checkpoint
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel, build_network
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
