"""`ynet-db train`, `evaluate` and `attention` end to end on a tiny generated benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from ynet_db.cli import main
from ynet_db.data import load_dataset
from ynet_db.data.synth import SynthConfig, generate
from ynet_db.nn.model import RetrievalModel


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(
        root, SynthConfig(seed=3, train_products=8, test_products=4, street_per_product=1, size=64), progress=False
    )
    return root


def _run(*args: str) -> Result:
    result = CliRunner().invoke(main, [*args, "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_train_then_evaluate_then_draw_attention(tiny_benchmark: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    _run("train", str(tiny_benchmark), "--out", str(out), "--epochs", "1", "--ctx-epochs", "1", "--views", "1")
    model = RetrievalModel.load(out / "model.safetensors", device="cpu")
    training_tags = {
        tag for product in load_dataset(tiny_benchmark).split("train").products.values() for tag in product.tags
    }
    assert model.embedding_dim == 256
    assert len(model.vocabulary) == len(training_tags) and all(tag in model.vocabulary for tag in training_tags)

    report_dir = tmp_path / "evaluation"
    _run("evaluate", str(tiny_benchmark), "--model", str(out / "model.safetensors"), "--out", str(report_dir))
    results = json.loads((report_dir / "results.json").read_text())
    assert set(results["top_k"]) >= {"1", "5", "10", "20", "50"}
    assert results["top_k"]["50"] == 1.0, "four products: every query finds its product in the top 50"
    assert Image.open(report_dir / "topk.png").size[0] > 100

    shop = next(tiny_benchmark.glob("img/*/*/id_*/shop_01.jpg"))
    picture = tmp_path / "attention.png"
    _run("attention", str(shop), "--model", str(out / "model.safetensors"), "--tag", "color:red", "--out", str(picture))
    assert Image.open(picture).size[0] >= 64


def test_evaluate_a_catalogue_file_without_street_photos(tiny_benchmark: Path, tmp_path: Path) -> None:
    shops = sorted(tiny_benchmark.glob("img/*/*/id_*/shop_01.jpg"))[:5]
    rows = ["id,category,image,tags"] + [f"sku-{i},dress,{path},category:dress" for i, path in enumerate(shops)]
    rows.append("sku-x,dress,missing.jpg,category:dress")
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("\n".join(rows) + "\n")
    report_dir = tmp_path / "catalogue-evaluation"
    _run("evaluate", str(catalogue), "--catalogue", "--out", str(report_dir))
    results = json.loads((report_dir / "results.json").read_text())
    assert (results["mode"], results["queries"], results["gallery"]) == ("catalogue", 5, 5)
    assert [q["products"] for q in results["per_query"]] == [[f"sku-{i}"] for i in range(5)]
    assert len(results["unreadable"]) == 1 and results["unreadable"][0].startswith(f"{catalogue}:7: image not found")

    refused = CliRunner().invoke(main, ["evaluate", str(catalogue), "--out", str(report_dir)])
    assert refused.exit_code == 2 and "evaluated with --catalogue" in refused.output
