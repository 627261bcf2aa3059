from __future__ import annotations

import re
from pathlib import Path

import pytest
from release_files import BLOUSE, DRESS, TEE, replace_line, write_list

from ynet_db.data import Box, DatasetError, ImageRef, Pair, load_dataset
from ynet_db.data.deepfashion import english_name, read_deepfashion


def test_reads_pairs_with_the_releases_spelling_and_boxes(deepfashion_root: Path) -> None:
    data = read_deepfashion(deepfashion_root)
    root = deepfashion_root
    assert data.pairs[0] == Pair(
        street=ImageRef(root / f"{BLOUSE}/comsumer_01.jpg", Box(5, 6, 50, 38)),
        shop=ImageRef(root / f"{BLOUSE}/shop_01.jpg", Box(0, 0, 60, 40)),
        item_id="id_00000001",
        split="train",
    )
    assert data.pairs[1].street == ImageRef(root / f"{BLOUSE}/comsumer_02.jpg", None)
    assert [p.split for p in data.pairs] == ["train", "train", "test", "val"]
    assert data.splits == ["test", "train", "val"]


def test_products_carry_category_and_positive_attribute_tags(deepfashion_root: Path) -> None:
    products = read_deepfashion(deepfashion_root).products
    assert products["id_00000001"].category == "Blouse"
    assert products["id_00000001"].tags == ("category:blouse", "texture:floral_print", "shape:fitted")
    assert products["id_00000002"].tags == ("category:lace_dress", "shape:a-line_skirt")
    assert products["id_00000003"].tags == ("category:t_shirt", "style:loose_fit")
    assert products["id_00000001"].shop_images == (
        ImageRef(deepfashion_root / f"{BLOUSE}/shop_01.jpg", Box(0, 0, 60, 40)),
    )


def test_split_keeps_its_own_products_as_gallery(deepfashion_root: Path) -> None:
    test = load_dataset(deepfashion_root).split("test")
    assert list(test.products) == ["id_00000002"]
    assert [p.street.path.name for p in test.pairs] == ["comsumer_01.jpg"]


def test_partition_alone_gives_category_tags_and_no_boxes(deepfashion_root: Path) -> None:
    for name in ("list_bbox_consumer2shop.txt", "list_item_consumer2shop.txt", "list_attr_items.txt"):
        (deepfashion_root / "Anno" / name).unlink()
    data = read_deepfashion(deepfashion_root)
    assert data.products["id_00000002"].tags == ("category:lace_dress",)
    assert all(p.street.box is None and p.shop.box is None for p in data.pairs)


def test_item_list_without_header_line(deepfashion_root: Path) -> None:
    (deepfashion_root / "Anno/list_item_consumer2shop.txt").write_text("3\nid_00000001\nid_00000002\nid_00000003\n")
    assert len(read_deepfashion(deepfashion_root).products) == 3


def error_of(root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        read_deepfashion(root)
    return str(caught.value)


@pytest.mark.parametrize(
    ("file", "line", "text", "message"),
    [
        (
            "Eval/list_eval_partition.txt",
            4,
            f"{DRESS}/comsumer_01.jpg {DRESS}/shop_01.jpg id_00000002 holdout",
            "list_eval_partition.txt:4: evaluation status 'holdout' is not one of train, val, test",
        ),
        (
            "Eval/list_eval_partition.txt",
            3,
            f"{BLOUSE}/comsumer_01.jpg id_00000001 train",
            "list_eval_partition.txt:3: expected at least 4 fields, found 3",
        ),
        (
            "Eval/list_eval_partition.txt",
            6,
            f"{TEE}/comsumer_01.jpg {TEE}/shop_01.jpg id_00000004 val",
            "list_eval_partition.txt:6: item id_00000004 is not in Anno/list_item_consumer2shop.txt",
        ),
        (
            "Eval/list_eval_partition.txt",
            4,
            f"{DRESS}/comsumer_01.jpg {DRESS}/shop_01.jpg id_00000001 train",
            "list_eval_partition.txt:4: item id_00000001 is filed under both Blouse and Lace_Dress",
        ),
        (
            "Eval/list_eval_partition.txt",
            4,
            "comsumer_01.jpg shop_01.jpg id_00000002 test",
            "list_eval_partition.txt:4: image 'comsumer_01.jpg' is not img/<GROUP>/<Category>/<item>/<file>",
        ),
        (
            "Anno/list_bbox_consumer2shop.txt",
            3,
            f"{BLOUSE}/comsumer_01.jpg 1 2 5 6 fifty 38",
            "list_bbox_consumer2shop.txt:3: bad box x_1 y_1 x_2 y_2 = 5 6 fifty 38",
        ),
        (
            "Anno/list_bbox_consumer2shop.txt",
            3,
            f"{BLOUSE}/comsumer_01.jpg 1 2 50 6 5 38",
            "list_bbox_consumer2shop.txt:3: bad box x_1 y_1 x_2 y_2 = 50 6 5 38",
        ),
        (
            "Anno/list_bbox_consumer2shop.txt",
            4,
            f"{BLOUSE}/shop_01.jpg 4 1 0 0 60 40",
            "list_bbox_consumer2shop.txt:4: clothes type '4' must be 1-3 and source '1' 1 or 2",
        ),
        (
            "Anno/list_attr_items.txt",
            4,
            "id_00000002 -1 1 -1",
            "list_attr_items.txt:4: item id_00000002 has 3 attribute values, expected 4",
        ),
        (
            "Anno/list_attr_items.txt",
            5,
            "id_00000003 0 2 0 1",
            "list_attr_items.txt:5: attribute values must be 1, -1 or 0, found 2",
        ),
        ("Anno/list_attr_cloth.txt", 4, "Fitted 7", "list_attr_cloth.txt:4: attribute type '7' is not a row number of"),
        ("Anno/list_attr_cloth.txt", 1, "many", "list_attr_cloth.txt:1: expected the number of rows, found 'many'"),
    ],
)
def test_malformed_lines_are_reported_with_file_and_line(
    deepfashion_root: Path, file: str, line: int, text: str, message: str
) -> None:
    replace_line(deepfashion_root / file, line, text)
    assert message in error_of(deepfashion_root)


def test_an_item_in_two_splits_is_refused(deepfashion_root: Path) -> None:
    replace_line(
        deepfashion_root / "Eval/list_eval_partition.txt",
        4,
        f"{BLOUSE}/comsumer_02.jpg {BLOUSE}/shop_01.jpg id_00000001 test",
    )
    assert error_of(deepfashion_root).endswith("list_eval_partition.txt:4: item id_00000001 is in both train and test")


def test_a_count_line_that_disagrees_says_truncated(deepfashion_root: Path) -> None:
    path = deepfashion_root / "Eval/list_eval_partition.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    assert error_of(deepfashion_root) == f"{path}:1: the count line says 4 rows but the file has 3; is it truncated?"


def test_attribute_items_without_their_names_file(deepfashion_root: Path) -> None:
    (deepfashion_root / "Anno/list_attr_cloth.txt").unlink()
    assert re.search(
        r"list_attr_cloth.txt: does not exist, but Anno/list_attr_items.txt needs it", error_of(deepfashion_root)
    )


def test_english_name_drops_the_chinese_name_and_parentheses() -> None:
    assert english_name(("碎花", "floral", "print")) == "floral print"
    assert english_name(("宽松", "(Loose", "Fit)")) == "Loose Fit"
    assert english_name(("a-line", "skirt")) == "a-line skirt"
    assert english_name(("纯色",)) == "纯色"


def test_attribute_names_with_spaces_keep_every_word(deepfashion_root: Path) -> None:
    write_list(
        deepfashion_root / "Anno/list_attr_cloth.txt",
        "attribute_name attribute_type",
        [
            "floral  print   1",
            "a line skirt 2",
            "Fitted 2",
            "Loose Fit 3",
        ],
    )
    assert read_deepfashion(deepfashion_root).products["id_00000002"].tags == (
        "category:lace_dress",
        "shape:a_line_skirt",
    )
