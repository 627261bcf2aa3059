"""`ynet-db train`, `evaluate` and `attention` end to end on a tiny generated benchmark."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from ynet_db.cli import main
from ynet_db.data import load_dataset
from ynet_db.data.records import ImageRef
from ynet_db.data.synth import SynthConfig, generate
from ynet_db.images.dataset import read_image
from ynet_db.models.evaluate import KS
from ynet_db.nn.model import RetrievalModel


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(
        root, SynthConfig(seed=3, train_products=8, test_products=4, street_per_product=1, size=64), progress=False
    )
    return root


@pytest.fixture(scope="module")
def distractors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """56 shop photos of other generated products: with them a query ranks among 59 other images, so
    every k up to 50 can miss."""
    root = tmp_path_factory.mktemp("others")
    generate(root, SynthConfig(seed=4, train_products=56, test_products=0, size=64), progress=False)
    folder = tmp_path_factory.mktemp("distractors")
    for i, shop in enumerate(sorted(root.glob("img/*/*/id_*/shop_01.jpg"))):
        shutil.copy(shop, folder / f"{i}.jpg")
    return folder


def reference_top_k(model: RetrievalModel, benchmark: Path, distractors: Path) -> dict[str, float]:
    """Brute force, one query at a time: a query's rank is how many images of other products (or
    distractors) score above the best image of its own product."""
    split = load_dataset(benchmark).split("test")
    gallery = [(item, ref.path, p.tags) for item, p in split.products.items() for ref in p.shop_images]
    gallery += [(None, path, ()) for path in sorted(distractors.glob("*.jpg"))]
    pixels = torch.stack([model.preprocess(read_image(ImageRef(path))) for _, path, _ in gallery])
    shop = model.encode_shop(pixels, [tags for _, _, tags in gallery]).vectors.double().numpy()
    ranks = []
    for pair in split.pairs:
        street = model.encode_street(model.preprocess(read_image(ImageRef(pair.street.path)))[None])
        scores = shop @ street.vectors[0].double().numpy()
        own = max(score for (item, _, _), score in zip(gallery, scores) if item == pair.item_id)
        ranks.append(sum(score > own for (item, _, _), score in zip(gallery, scores) if item != pair.item_id))
    return {str(k): float(np.mean([rank < k for rank in ranks])) for k in KS}


def _run(*args: str) -> Result:
    result = CliRunner().invoke(main, [*args, "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_train_then_evaluate_then_draw_attention(tiny_benchmark: Path, distractors: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    _run("train", str(tiny_benchmark), "--out", str(out), "--epochs", "1", "--ctx-epochs", "1", "--views", "1")
    model = RetrievalModel.load(out / "model.safetensors", device="cpu")
    training_tags = {
        tag for product in load_dataset(tiny_benchmark).split("train").products.values() for tag in product.tags
    }
    assert model.embedding_dim == 256
    assert len(model.vocabulary) == len(training_tags) and all(tag in model.vocabulary for tag in training_tags)

    report_dir = tmp_path / "evaluation"
    options = ["--model", str(out / "model.safetensors"), "--distractors", str(distractors), "--no-rerank"]
    _run("evaluate", str(tiny_benchmark), *options, "--out", str(report_dir))
    results = json.loads((report_dir / "results.json").read_text())
    assert (results["queries"], results["gallery"], results["distractors"]) == (4, 60, 56)
    assert results["top_k"] == pytest.approx(reference_top_k(model, tiny_benchmark, distractors))
    assert Image.open(report_dir / "topk.png").size[0] > 100

    shop = next(tiny_benchmark.glob("img/*/*/id_*/shop_01.jpg"))
    picture = tmp_path / "attention.png"
    _run("attention", str(shop), "--model", str(out / "model.safetensors"), "--tag", "color:red", "--out", str(picture))
    assert Image.open(picture).size[0] >= 64


def test_evaluate_a_catalogue_file_without_street_photos(
    tiny_benchmark: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The catalogue's photos lie outside its folder: both are roots, so a missing photo says it is missing.
    monkeypatch.setenv("YNET_IMAGE_ROOTS", os.pathsep.join([str(tiny_benchmark), str(tmp_path)]))
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
