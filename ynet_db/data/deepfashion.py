"""Reader for the DeepFashion Consumer-to-Shop release (Liu et al., CVPR 2016).

Layout under the root:
    img/<GROUP>/<Category>/id_XXXXXXXX/comsumer_NN.jpg, shop_NN.jpg   (the release spells "comsumer")
    Eval/list_eval_partition.txt     <consumer image> <shop image> <item id> <train|val|test>
    Anno/list_bbox_consumer2shop.txt <image> <clothes type 1-3> <source 1=shop 2=consumer> x_1 y_1 x_2 y_2
    Anno/list_item_consumer2shop.txt <item id>
    Anno/list_attr_items.txt         <item id> <one 1 / -1 / 0 per attribute>
    Anno/list_attr_cloth.txt         [<Chinese name>] <attribute name, may hold spaces> <type number>
    Anno/list_attr_type.txt          [<Chinese name>] <type name>   (type numbers count rows from 1)
Every list file starts with a count line and a header line. Only the partition file is required;
without the Anno files there are no boxes, and the tags are the category alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ynet_db.data.listfile import Row, read_list_file
from ynet_db.data.records import Box, DatasetError, ImageRef, Pair, Product, RetrievalDataset, make_tag

PARTITION = Path("Eval/list_eval_partition.txt")
BOXES = Path("Anno/list_bbox_consumer2shop.txt")
ITEMS = Path("Anno/list_item_consumer2shop.txt")
ATTRIBUTE_ITEMS = Path("Anno/list_attr_items.txt")
ATTRIBUTE_NAMES = Path("Anno/list_attr_cloth.txt")
ATTRIBUTE_TYPES = Path("Anno/list_attr_type.txt")
SPLITS = ("train", "val", "test")
ATTRIBUTE_VALUES = {"1": True, "-1": False, "0": False}
"""1 is positive, -1 negative, 0 unknown: only positives become tags."""


def is_deepfashion(root: Path) -> bool:
    return (root / PARTITION).is_file()


def read_deepfashion(root: Path) -> RetrievalDataset:
    boxes = _read_boxes(root / BOXES) if (root / BOXES).is_file() else {}
    listed = _read_items(root / ITEMS) if (root / ITEMS).is_file() else None
    attribute_tags = _read_attribute_tags(root) if (root / ATTRIBUTE_ITEMS).is_file() else {}
    pairs, categories = _read_partition(root, boxes, listed)
    products = _products(pairs, categories, attribute_tags)
    return RetrievalDataset("deepfashion-consumer2shop", root, products, pairs)


@dataclass(frozen=True)
class _PartitionRow:
    street: str
    shop: str
    item_id: str
    split: str


def _read_partition(root: Path, boxes: dict[str, Box], listed: set[str] | None) -> tuple[list[Pair], dict[str, str]]:
    path = root / PARTITION
    pairs: list[Pair] = []
    categories: dict[str, str] = {}
    splits: dict[str, str] = {}
    for row in read_list_file(path, min_fields=4):
        entry = _partition_row(path, row)
        if listed is not None and entry.item_id not in listed:
            raise DatasetError(path, f"item {entry.item_id} is not in {ITEMS}", row.line)
        _check_one_split(path, row, entry, splits)
        _check_one_category(path, row, entry, categories)
        street = ImageRef(root / entry.street, boxes.get(entry.street))
        shop = ImageRef(root / entry.shop, boxes.get(entry.shop))
        pairs.append(Pair(street, shop, entry.item_id, entry.split))
    return pairs, categories


def _partition_row(path: Path, row: Row) -> _PartitionRow:
    street, shop, item_id, split = row.fields[:4]
    if split not in SPLITS:
        raise DatasetError(path, f"evaluation status {split!r} is not one of {', '.join(SPLITS)}", row.line)
    return _PartitionRow(street, shop, item_id, split)


def _check_one_split(path: Path, row: Row, entry: _PartitionRow, splits: dict[str, str]) -> None:
    # Splits are by product: an item in two splits would leak test products into training.
    first = splits.setdefault(entry.item_id, entry.split)
    if first != entry.split:
        raise DatasetError(path, f"item {entry.item_id} is in both {first} and {entry.split}", row.line)


def _check_one_category(path: Path, row: Row, entry: _PartitionRow, categories: dict[str, str]) -> None:
    for image in (entry.street, entry.shop):
        category = category_of(image)
        if category is None:
            raise DatasetError(path, f"image {image!r} is not img/<GROUP>/<Category>/<item>/<file>", row.line)
        first = categories.setdefault(entry.item_id, category)
        if first != category:
            raise DatasetError(path, f"item {entry.item_id} is filed under both {first} and {category}", row.line)


def category_of(image: str) -> str | None:
    """The <Category> folder of img/<GROUP>/<Category>/id_XXXXXXXX/<file>."""
    parts = PurePosixPath(image).parts
    return parts[-3] if len(parts) >= 4 else None


def _products(
    pairs: list[Pair], categories: dict[str, str], attribute_tags: dict[str, tuple[str, ...]]
) -> dict[str, Product]:
    shop_images: dict[str, dict[ImageRef, None]] = {}
    for pair in pairs:
        shop_images.setdefault(pair.item_id, {})[pair.shop] = None  # ordered set
    products: dict[str, Product] = {}
    for item_id, images in shop_images.items():
        category = categories[item_id]
        tags = tuple(dict.fromkeys((make_tag("category", category), *attribute_tags.get(item_id, ()))))
        products[item_id] = Product(item_id, category, tags, tuple(images))
    return products


def _read_boxes(path: Path) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    for row in read_list_file(path, min_fields=7):
        name, clothes_type, source, *corners = row.fields[:7]
        if clothes_type not in ("1", "2", "3") or source not in ("1", "2"):
            raise DatasetError(
                path, f"clothes type {clothes_type!r} must be 1-3 and source {source!r} 1 or 2", row.line
            )
        boxes[name] = _box(path, row, corners)
    return boxes


def _box(path: Path, row: Row, corners: list[str]) -> Box:
    try:
        left, top, right, bottom = (int(value) for value in corners)
        return Box(left, top, right, bottom)
    except ValueError as exc:
        raise DatasetError(path, f"bad box x_1 y_1 x_2 y_2 = {' '.join(corners)}", row.line) from exc


def _read_items(path: Path) -> set[str]:
    return {row.fields[0] for row in read_list_file(path, min_fields=1, header="auto")}


def _read_attribute_tags(root: Path) -> dict[str, tuple[str, ...]]:
    for required in (ATTRIBUTE_NAMES, ATTRIBUTE_TYPES):
        if not (root / required).is_file():
            raise DatasetError(root / required, f"does not exist, but {ATTRIBUTE_ITEMS} needs it to name attributes")
    names = attribute_tag_names(root / ATTRIBUTE_NAMES, _read_attribute_types(root / ATTRIBUTE_TYPES))
    path = root / ATTRIBUTE_ITEMS
    return {row.fields[0]: _positive_tags(path, row, names) for row in read_list_file(path, min_fields=1)}


def _positive_tags(path: Path, row: Row, names: list[str]) -> tuple[str, ...]:
    values = row.fields[1:]
    if len(values) != len(names):
        raise DatasetError(
            path, f"item {row.fields[0]} has {len(values)} attribute values, expected {len(names)}", row.line
        )
    unknown = sorted(set(values) - ATTRIBUTE_VALUES.keys())
    if unknown:
        raise DatasetError(path, f"attribute values must be 1, -1 or 0, found {', '.join(unknown)}", row.line)
    return tuple(name for name, value in zip(names, values) if ATTRIBUTE_VALUES[value])


def _read_attribute_types(path: Path) -> dict[int, str]:
    return {number: english_name(row.fields) for number, row in enumerate(read_list_file(path, min_fields=1), start=1)}


def attribute_tag_names(path: Path, types: dict[int, str]) -> list[str]:
    """One 'type:attribute' tag per attribute, in file order (the order of list_attr_items' columns)."""
    tags: list[str] = []
    for row in read_list_file(path, min_fields=2):
        type_text = row.fields[-1]
        if not type_text.isdigit() or int(type_text) not in types:
            raise DatasetError(path, f"attribute type {type_text!r} is not a row number of {ATTRIBUTE_TYPES}", row.line)
        tags.append(make_tag(types[int(type_text)], english_name(row.fields[:-1])))
    return tags


def english_name(words: tuple[str, ...]) -> str:
    """The English part of a name the release may precede by its Chinese name, e.g. '(Fitted)'."""
    english = list(words)
    while english and not english[0].isascii():
        english.pop(0)
    name = " ".join(english).strip("() ")
    return name or " ".join(words)
