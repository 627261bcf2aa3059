from __future__ import annotations

import logging
from pathlib import Path

import pytest
from release_files import write_json

from ynet_db.data import Box, DatasetError, ImageRef, Pair
from ynet_db.data.street2shop import read_street2shop


def photo(root: Path, number: int) -> Path:
    return root / "photos" / f"{number:09d}.jpg"


def test_reads_gallery_pairs_and_boxes(street2shop_root: Path) -> None:
    root = street2shop_root
    data = read_street2shop(root)
    assert data.products["7"].category == "dresses"
    assert data.products["7"].tags == ("category:dresses",)
    assert data.products["7"].shop_images == (ImageRef(photo(root, 1)), ImageRef(photo(root, 10)))
    assert data.products["9"].tags == ("category:bags",)
    assert data.pairs == [
        Pair(ImageRef(photo(root, 6), Box(1, 2, 4, 6)), ImageRef(photo(root, 3)), "9", "test"),
        Pair(ImageRef(photo(root, 4), Box(5, 6, 25, 36)), ImageRef(photo(root, 1)), "7", "train"),
        Pair(ImageRef(photo(root, 5), Box(0, 0, 50, 50)), ImageRef(photo(root, 2)), "8", "test"),
    ]
    assert sorted(data.split("test").products) == ["8", "9"]


def error_of(root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        read_street2shop(root)
    return str(caught.value)


def test_malformed_photo_list_line(street2shop_root: Path) -> None:
    path = street2shop_root / "photos/photos.txt"
    lines = path.read_text().splitlines()
    lines[1] = "000000002 http://example.com/2.jpg"
    path.write_text("\n".join(lines) + "\n")
    assert (
        error_of(street2shop_root)
        == f"{path}:2: expected '<9-digit id>,<url>', found '000000002 http://example.com/2.jpg'"
    )


def test_photos_not_downloaded_says_what_to_do(street2shop_root: Path) -> None:
    for image in (street2shop_root / "photos").glob("*.jpg"):
        image.unlink()
    assert "holds no <id>.jpg images: download the URLs in photos/photos.txt first" in error_of(street2shop_root)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"photo": 4, "product": 7, "bbox": {"left": 5, "top": 6, "width": 20}}, "entry 0: bad bbox"),
        ({"photo": 4, "product": 7, "bbox": {"left": 5, "top": 6, "width": 0, "height": 3}}, "entry 0: bad bbox"),
        (
            {"photo": 99, "product": 7, "bbox": {"left": 5, "top": 6, "width": 2, "height": 3}},
            "entry 0: photo 99 is not listed in photos/photos.txt",
        ),
        ({"photo": "4", "product": 7}, "entry 0: expected integer 'photo' and 'product'"),
    ],
)
def test_bad_pair_entries_are_named(street2shop_root: Path, entry: dict[str, object], message: str) -> None:
    path = street2shop_root / "meta/json/train_pairs_dresses.json"
    write_json(path, [entry])
    assert error_of(street2shop_root).startswith(f"{path}: {message}")


def test_invalid_json_gives_its_line(street2shop_root: Path) -> None:
    path = street2shop_root / "meta/json/retrieval_bags.json"
    path.write_text('[\n{"photo": 3,\n "product" 9}]')
    assert error_of(street2shop_root) == f"{path}:3: is not valid JSON (Expecting ':' delimiter)"


def test_products_in_both_splits_lose_their_training_pairs(
    street2shop_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_json(
        street2shop_root / "meta/json/train_pairs_dresses.json",
        [
            {"photo": 4, "product": 8, "bbox": {"left": 5, "top": 6, "width": 20, "height": 30}},
        ],
    )
    with caplog.at_level(logging.WARNING):
        data = read_street2shop(street2shop_root)
    assert [p.split for p in data.pairs] == ["test", "test"]
    assert "1 training pairs name test products; dropped" in caplog.text


def test_pairs_of_products_without_gallery_photos_are_skipped(
    street2shop_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_json(street2shop_root / "meta/json/retrieval_bags.json", [])
    with caplog.at_level(logging.WARNING):
        data = read_street2shop(street2shop_root)
    assert "9" not in {p.item_id for p in data.pairs}
    assert "1 pairs name products without a shop photo in the gallery; skipped" in caplog.text
