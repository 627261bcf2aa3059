"""The encoders on ONNX Runtime: the same embeddings as PyTorch, graphs cached by content, failures refused.

The default and the shipped demo model are exported once per session (seconds each); the tests that
corrupt, replace or refuse graphs use the small 64x64 model, whose export is quicker.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ynet_db.config import Settings, SettingsError
from ynet_db.models.serving import load_serving
from ynet_db.nn.checkpoint import load_checkpoint
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.onnx_engine import MIN_COSINE
from ynet_db.nn.onnx_export import GRAPHS, graph_path, network_digest
from ynet_db.nn.runtime import RuntimeUnavailable, accelerate, resolve_runtime
from ynet_db.nn.runtime_threads import set_inference_threads
from ynet_db.presentation.demo import demo_checkpoint

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def default_on_onnx(onnx_cache: Path) -> RetrievalModel:
    return accelerate(RetrievalModel.load_default(), "onnxruntime", onnx_cache)


@pytest.fixture(scope="session")
def demo_on_onnx(onnx_cache: Path) -> RetrievalModel:
    return accelerate(RetrievalModel.load(demo_checkpoint()), "onnxruntime", onnx_cache)


def min_cosine(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape
    return float(F.cosine_similarity(got, expected, dim=-1).min())


def assert_same_encodings(onnx: RetrievalModel, reference: RetrievalModel, batch: int) -> None:
    size = reference.config.input_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    tags = list(reference.vocabulary.tags)
    tag_lists = [tags[i % max(1, len(tags)) :][:3] for i in range(batch)]
    got, expected = onnx.encode_shop(pixels, tag_lists), reference.encode_shop(pixels, tag_lists)
    assert min_cosine(got.vectors, expected.vectors) >= MIN_COSINE
    torch.testing.assert_close(got.attention, expected.attention, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(got.vectors.norm(dim=-1), torch.ones(batch))
    assert (got.unknown_tags, got.average_pooled) == (expected.unknown_tags, expected.average_pooled)
    street, street_expected = onnx.encode_street(pixels), reference.encode_street(pixels)
    assert min_cosine(street.maps, street_expected.maps) >= MIN_COSINE
    assert min_cosine(street.vectors, street_expected.vectors) >= MIN_COSINE
    assert street.maps.dtype == torch.float32 and street.vectors.dtype == torch.float32


@pytest.mark.parametrize("batch", [1, 5])
def test_the_default_model_on_onnxruntime_gives_pytorchs_embeddings(
    default_on_onnx: RetrievalModel, default_model: RetrievalModel, batch: int
) -> None:
    assert default_on_onnx.runtime == "onnxruntime" and default_model.runtime == "torch"
    assert_same_encodings(default_on_onnx, default_model, batch)


@pytest.mark.parametrize("batch", [1, 5])
def test_the_demo_models_tag_attention_runs_in_the_graph(
    demo_on_onnx: RetrievalModel, demo_model: RetrievalModel, batch: int
) -> None:
    assert demo_on_onnx.runtime == "onnxruntime" and len(demo_model.vocabulary) > 0
    assert_same_encodings(demo_on_onnx, demo_model, batch)
    # the tags move the attention away from uniform, so the comparison above covers the tag path
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    attention = demo_on_onnx.encode_shop(pixels, [list(demo_model.vocabulary.tags[:3])]).attention
    assert float(attention.max() - attention.min()) > 1e-3


def test_a_batch_the_graph_was_not_made_for_runs_in_pytorch(
    default_on_onnx: RetrievalModel, default_model: RetrievalModel
) -> None:
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))  # not the 224 input size
    assert default_on_onnx.engine is not None and not default_on_onnx.engine.handles(pixels)
    got, expected = default_on_onnx.encode_street(pixels), default_model.encode_street(pixels)
    torch.testing.assert_close(got.maps, expected.maps)


def test_a_changed_checkpoint_never_meets_the_old_graph(tmp_path: Path, demo_model: RetrievalModel) -> None:
    from ynet_db.nn.checkpoint import save_checkpoint

    checkpoint = load_checkpoint(demo_checkpoint())
    tensors = dict(checkpoint.tensors)
    tensors["street_projection.linear.bias"] = tensors["street_projection.linear.bias"] + 0.01
    save_checkpoint(tmp_path / "changed.safetensors", checkpoint.info, tensors)
    changed = RetrievalModel.load(tmp_path / "changed.safetensors")
    old = {kind: graph_path(tmp_path, demo_model.version, kind, network_digest(demo_model.network)) for kind in GRAPHS}
    new = {kind: graph_path(tmp_path, changed.version, kind, network_digest(changed.network)) for kind in GRAPHS}
    assert changed.version != demo_model.version
    assert not set(old.values()) & set(new.values())
    # even under the same version label, the graph is named by the tensors themselves
    relabelled = graph_path(tmp_path, demo_model.version, "street", network_digest(changed.network))
    assert relabelled != old["street"]


@pytest.fixture(scope="module")
def small_model(small_config: ModelConfig) -> RetrievalModel:
    return RetrievalModel.load_default(config=small_config)


def small_on_onnx(config: ModelConfig, cache: Path) -> RetrievalModel:
    return accelerate(RetrievalModel.load_default(config=config), "onnxruntime", cache)


def test_graphs_are_exported_once_and_reused(tmp_path: Path, small_config: ModelConfig) -> None:
    first = small_on_onnx(small_config, tmp_path)
    files = sorted(tmp_path.glob("*.onnx"))
    assert first.runtime == "onnxruntime" and [p.name.split("-")[-2] for p in files] == ["shop", "street"]
    stamps = [p.stat().st_mtime_ns for p in files]
    second = small_on_onnx(small_config, tmp_path)
    assert second.runtime == "onnxruntime"
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("*.onnx"))] == stamps
    assert not list(tmp_path.glob("*.partial"))


def test_the_graphs_pad_by_constants_that_onnxruntime_fuses_into_the_convolutions(
    tmp_path: Path, small_config: ModelConfig
) -> None:
    # The 'SAME' pads used to be computed from the input's shape on every run (hundreds of shape nodes) and
    # kept as Pad nodes, which broke ONNX Runtime's blocked layout: a third of a batch-1 street encode.
    import onnx
    import onnxruntime

    small_on_onnx(small_config, tmp_path)
    for graph in sorted(tmp_path.glob("*.onnx")):
        exported = onnx.load(str(graph)).graph.node
        assert "Pad" in {node.op_type for node in exported}  # the network does pad (stride-2 'SAME')
        assert len([node for node in exported if node.op_type == "Shape"]) <= 1  # the final flatten's, not the pads'
        assert all(all(node.input) for node in exported)  # no unset optional input left named ''
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp_path / f"{graph.stem}.optimized")
        onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        optimized = {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}
        assert "Conv" in optimized and "Pad" not in optimized, (graph.name, sorted(optimized))


def test_a_corrupt_cached_graph_is_refused_and_exported_again(
    tmp_path: Path, small_config: ModelConfig, small_model: RetrievalModel, caplog: pytest.LogCaptureFixture
) -> None:
    digest = network_digest(small_model.network)
    paths = [graph_path(tmp_path, small_model.version, kind, digest) for kind in GRAPHS]
    for path in paths:  # where the graphs would be cached: a half-written file, a disk error, an edit
        path.write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING):
        model = small_on_onnx(small_config, tmp_path)
    assert model.runtime == "onnxruntime"
    assert all(path.read_bytes() != b"not an onnx graph" for path in paths)
    assert_same_encodings(model, small_model, 3)
    assert not [r for r in caplog.records if "stays on PyTorch" in r.getMessage()]


def test_a_cached_graph_of_other_weights_is_refused_and_exported_again(
    tmp_path: Path, small_config: ModelConfig, small_model: RetrievalModel
) -> None:
    # A valid graph whose outputs are not this network's, under this network's file names: the check on
    # load must catch it.
    other = RetrievalModel.load_default(config=small_config)
    with torch.no_grad():
        other.network.street_projection.linear.weight.mul_(-1.0)
        other.network.shop_projection.linear.weight.mul_(-1.0)
    other_digest = network_digest(other.network)
    assert accelerate(other, "onnxruntime", tmp_path).runtime == "onnxruntime"
    digest = network_digest(small_model.network)
    for kind in GRAPHS:
        source = graph_path(tmp_path, other.version, kind, other_digest)
        graph_path(tmp_path, small_model.version, kind, digest).write_bytes(source.read_bytes())
    model = small_on_onnx(small_config, tmp_path)
    assert model.runtime == "onnxruntime"
    assert_same_encodings(model, small_model, 2)


def test_a_graph_that_cannot_be_made_leaves_pytorch_serving_and_says_why(
    tmp_path: Path, small_config: ModelConfig, small_model: RetrievalModel, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache directory cannot be made under a file")
    with caplog.at_level(logging.WARNING, logger="ynet_db.nn.runtime"):
        model = small_on_onnx(small_config, blocker / "onnx")
    assert model.runtime == "torch"
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"model {model.version} stays on PyTorch: cached graph: " in message
    assert "re-exported graph: " in message and "a-file" in message
    assert_same_encodings(model, small_model, 2)


def test_runtime_settings(tmp_path: Path) -> None:
    assert Settings.from_env({}).runtime == "auto"
    assert Settings.from_env({"YNET_RUNTIME": "Torch"}).runtime == "torch"
    with pytest.raises(SettingsError, match=r"YNET_RUNTIME='tensorrt': expected one of auto, onnxruntime, torch"):
        Settings.from_env({"YNET_RUNTIME": "tensorrt"})
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [resolve_runtime(s, cpu) for s in ("auto", "onnxruntime", "torch")] == ["onnxruntime"] * 2 + ["torch"]
    assert resolve_runtime("auto", cuda) == "torch-fp16"
    with pytest.raises(RuntimeUnavailable, match="YNET_RUNTIME=onnxruntime runs on the CPU; this model is on cuda"):
        resolve_runtime("onnxruntime", cuda)


def test_serving_loads_give_onnxruntime_the_process_threads_and_pytorch_one(
    tmp_path: Path, onnx_cache: Path, default_on_onnx: RetrievalModel
) -> None:
    # The worker's load: the default model, graphs cached in the data directory (copied from the session's).
    settings = Settings(data_dir=tmp_path)
    (tmp_path / "onnx").mkdir()
    for graph in onnx_cache.glob(f"{default_on_onnx.version.replace('@', '_')}-*.onnx"):
        (tmp_path / "onnx" / graph.name).write_bytes(graph.read_bytes())
    set_inference_threads(2)  # as a worker process is started
    model = load_serving(settings)
    assert model.runtime == "onnxruntime" and model.engine is not None
    assert (model.engine.threads, torch.get_num_threads()) == (2, 1)  # PyTorch's pool would spin beside it
    second = load_serving(settings)  # a second model of the same process (a search worker's next active one)
    assert second.engine is not None and second.engine.threads == 2
    assert load_serving(replace(settings, runtime="torch")).runtime == "torch"


def test_ynet_runtime_torch_never_imports_onnxruntime(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from ynet_db.config import Settings\n"
        "from ynet_db.models.serving import load_configured\n"
        f"model = load_configured(Settings.from_env({{'YNET_RUNTIME': 'torch', 'YNET_DATA_DIR': {str(tmp_path)!r}}}))\n"
        "print(model.runtime, 'onnxruntime' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torch", "False"]
    assert not (tmp_path / "onnx").exists()


def test_processes_that_start_together_share_one_export(tmp_path: Path) -> None:
    # Two processes find the cache empty at once: the lock lets one export, and both load a whole graph.
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from ynet_db.nn.config import ModelConfig\n"
        "from ynet_db.nn.model import RetrievalModel\n"
        "from ynet_db.nn.runtime import accelerate\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "config = ModelConfig(name='test-small', projection='linear', embedding_dim=32, map_size=2, input_size=64)\n"
        "model = accelerate(RetrievalModel.load_default(config=config), 'onnxruntime', Path(sys.argv[1]), 1)\n"
        "print(model.runtime)\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=240)[0].splitlines() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert [lines[-1] for lines in outputs] == ["onnxruntime", "onnxruntime"]
    exports = sorted(line.split()[2] for lines in outputs for line in lines if line.startswith("exported the"))
    assert exports == ["shop", "street"]  # once each, whichever process got there first
    assert sorted(p.name.split("-")[-2] for p in tmp_path.glob("*.onnx")) == ["shop", "street"]
    assert not list(tmp_path.glob("*.partial"))
