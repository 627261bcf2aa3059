"""Small copies of the two release formats, written by the tests in the releases' own spelling."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from release_files import BLOUSE, DRESS, TEE, write_json, write_list


@pytest.fixture
def deepfashion_root(tmp_path: Path) -> Path:
    """Three items, one per split, with boxes and attributes as the release writes them."""
    root = tmp_path / "deepfashion"
    for folder in (BLOUSE, DRESS, TEE):
        (root / folder).mkdir(parents=True)
        for name in ("comsumer_01.jpg", "comsumer_02.jpg", "shop_01.jpg"):
            Image.new("RGB", (60, 40), (200, 30, 30)).save(root / folder / name)
    write_list(
        root / "Eval/list_eval_partition.txt",
        "image_pair_name_1 image_pair_name_2 item_id evaluation_status",
        [
            f"{BLOUSE}/comsumer_01.jpg  {BLOUSE}/shop_01.jpg  id_00000001  train",
            f"{BLOUSE}/comsumer_02.jpg  {BLOUSE}/shop_01.jpg  id_00000001  train",
            f"{DRESS}/comsumer_01.jpg   {DRESS}/shop_01.jpg   id_00000002  test",
            f"{TEE}/comsumer_01.jpg     {TEE}/shop_01.jpg     id_00000003  val",
        ],
    )
    write_list(
        root / "Anno/list_bbox_consumer2shop.txt",
        "image_name clothes_type source_type x_1 y_1 x_2 y_2",
        [
            f"{BLOUSE}/comsumer_01.jpg   1   2   5  6  50  38",
            f"{BLOUSE}/shop_01.jpg       1   1   0  0  60  40",
            f"{DRESS}/comsumer_01.jpg    3   2  10  2  30  39",
        ],
    )
    write_list(root / "Anno/list_item_consumer2shop.txt", "item_id", ["id_00000001", "id_00000002", "id_00000003"])
    write_list(root / "Anno/list_attr_type.txt", "attribute_type_name", ["纹理 texture", "形状 (shape)", "style"])
    write_list(
        root / "Anno/list_attr_cloth.txt",
        "attribute_name attribute_type",
        [
            "碎花 floral print   1",
            "a-line skirt   2",
            "Fitted 2",
            "宽松 (Loose Fit)   3",
        ],
    )
    write_list(
        root / "Anno/list_attr_items.txt",
        "item_id attribute_labels",
        [
            "id_00000001  1 -1 1 0",
            "id_00000002 -1  1 -1 -1",
            "id_00000003  0  0 0 1",
        ],
    )
    return root


@pytest.fixture
def street2shop_root(tmp_path: Path) -> Path:
    """Two categories; product 7 is a training product, 8 and 9 are test products."""
    root = tmp_path / "street2shop"
    (root / "photos").mkdir(parents=True)
    (root / "meta/json").mkdir(parents=True)
    ids = [1, 2, 3, 4, 5, 6, 10]
    (root / "photos/photos.txt").write_text(
        "".join(f"{photo:09d},http://example.com/{photo}.jpg\n" for photo in ids), encoding="utf-8"
    )
    for photo in ids:
        Image.new("RGB", (50, 50), (10, 20, 30)).save(root / "photos" / f"{photo:09d}.jpg")
    write_json(
        root / "meta/json/retrieval_dresses.json",
        [{"photo": 1, "product": 7}, {"photo": 2, "product": 8}, {"photo": 10, "product": 7}],
    )
    write_json(root / "meta/json/retrieval_bags.json", [{"photo": 3, "product": 9}])
    write_json(
        root / "meta/json/train_pairs_dresses.json",
        [{"photo": 4, "product": 7, "bbox": {"left": 5, "top": 6, "width": 20, "height": 30}}],
    )
    write_json(
        root / "meta/json/test_pairs_dresses.json",
        [{"photo": 5, "product": 8, "bbox": {"left": 0, "top": 0, "width": 50, "height": 50}}],
    )
    write_json(
        root / "meta/json/test_pairs_bags.json",
        [{"photo": 6, "product": 9, "bbox": {"left": 1, "top": 2, "width": 3, "height": 4}}],
    )
    return root
