from __future__ import annotations

from pathlib import Path

import pytest

from ynet_db.data import DatasetError, dataset_format, load_dataset


def test_detects_each_release_format(deepfashion_root: Path, street2shop_root: Path) -> None:
    assert dataset_format(deepfashion_root) == "deepfashion-consumer2shop"
    assert dataset_format(street2shop_root) == "street2shop"
    assert load_dataset(deepfashion_root).name == "deepfashion-consumer2shop"
    assert load_dataset(street2shop_root).name == "street2shop"


def test_neither_format_names_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: is neither DeepFashion Consumer-to-Shop (expected Eval/list_eval_partition.txt) nor "
        "Street2Shop (expected photos/photos.txt and meta/json/); `ynet-db dataset synth` writes a generated one"
    )


def test_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere: is not a directory"):
        load_dataset(tmp_path / "nowhere")
