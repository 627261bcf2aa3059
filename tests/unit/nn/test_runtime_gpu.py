"""The GPU worker's engine (fp16 autocast, channels_last, pinned uploads), run here on the CPU.

No GPU is needed: the same code runs under CPU autocast, so its numerics and its wiring are covered;
pinning and the CUDA kernels themselves only run where a GPU is (not on the machines the tests use).
"""

from __future__ import annotations

import torch
from click.testing import CliRunner

from ynet_db.cli import main
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.runtime import resolve_runtime
from ynet_db.nn.runtime_gpu import MIN_COSINE, half_precision_engine
from ynet_db.presentation.demo import demo_checkpoint


def test_the_fp16_engine_gives_the_fp32_embeddings_within_the_gpu_bar(demo_model: RetrievalModel) -> None:
    model = RetrievalModel.load(demo_checkpoint())
    model.engine = half_precision_engine(model.network, model.device)
    assert model.runtime == "torch-fp16"
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    tags = [list(demo_model.vocabulary.tags[i : i + 3]) for i in range(3)]
    got, expected = model.encode_shop(pixels, tags), demo_model.encode_shop(pixels, tags)
    assert float(torch.nn.functional.cosine_similarity(got.vectors, expected.vectors).min()) >= MIN_COSINE
    street, street_expected = model.encode_street(pixels), demo_model.encode_street(pixels)
    assert float(torch.nn.functional.cosine_similarity(street.vectors, street_expected.vectors).min()) >= MIN_COSINE
    assert street.maps.dtype == torch.float32 and street.maps.device.type == "cpu"


def test_uploads_are_channels_last_and_pinned_only_for_a_gpu(small_config: ModelConfig) -> None:
    model = RetrievalModel.load_default(config=small_config)
    engine = half_precision_engine(model.network, model.device)
    uploaded = engine.upload(torch.randn(2, 3, 64, 64))
    assert uploaded.is_contiguous(memory_format=torch.channels_last) and not uploaded.is_pinned()


def test_a_gpu_model_gets_the_fp16_engine_unless_torch_is_asked_for() -> None:
    cuda = torch.device("cuda")
    assert resolve_runtime("auto", cuda) == "torch-fp16"
    assert resolve_runtime("torch", cuda) == "torch"


def test_the_worker_takes_a_device() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0 and "--device [auto|cpu|cuda]" in result.output
