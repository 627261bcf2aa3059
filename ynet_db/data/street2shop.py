"""Reader for Street2Shop, "Where to Buy It" (Kiapour et al., ICCV 2015).

Layout under the root:
    photos/photos.txt                      <9-digit photo id>,<url>
    photos/<9-digit id>.jpg                the photos themselves
    meta/json/train_pairs_<category>.json  [{"photo", "product", "bbox": {"left", "top", "width", "height"}}]
    meta/json/test_pairs_<category>.json   the same, for test products
    meta/json/retrieval_<category>.json    [{"photo", "product"}]: the shop photos (the gallery)

The release ships URLs, not images: download every URL of photos/photos.txt to photos/<id>.jpg
(the id zero-padded to 9 digits, as in photos.txt) before reading. Street photos are cropped to
their box; the tags are the category alone (the release has no attributes).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ynet_db.data.records import Box, DatasetError, ImageRef, Pair, Product, RetrievalDataset, make_tag

log = logging.getLogger(__name__)

PHOTO_LIST = Path("photos/photos.txt")
JSON_DIR = Path("meta/json")
PAIR_SPLITS = ("train", "test")


def is_street2shop(root: Path) -> bool:
    return (root / PHOTO_LIST).is_file() and (root / JSON_DIR).is_dir()


def photo_path(root: Path, photo: int) -> Path:
    return root / "photos" / f"{photo:09d}.jpg"


def read_street2shop(root: Path) -> RetrievalDataset:
    photos = read_photo_list(root / PHOTO_LIST)
    _require_downloaded(root)
    categories = sorted(
        p.name.removeprefix("retrieval_").removesuffix(".json") for p in (root / JSON_DIR).glob("retrieval_*.json")
    )
    if not categories:
        raise DatasetError(root / JSON_DIR, "holds no retrieval_<category>.json gallery files")
    products: dict[str, Product] = {}
    for category in categories:
        _add_gallery(root, category, photos, products)
    pairs = [
        pair
        for category in categories
        for split in PAIR_SPLITS
        for pair in _read_pairs(root, category, split, photos, products)
    ]
    return RetrievalDataset("street2shop", root, products, _split_by_product(root, pairs))


def read_photo_list(path: Path) -> set[int]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DatasetError(path, "does not exist") from exc
    photos: set[int] = set()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            photos.add(_photo_line(path, number, line))
    return photos


def _photo_line(path: Path, number: int, line: str) -> int:
    photo, comma, url = line.strip().partition(",")
    if not comma or not photo.isdigit() or not url.strip():
        raise DatasetError(path, f"expected '<9-digit id>,<url>', found {line.strip()[:80]!r}", number)
    return int(photo)


def _require_downloaded(root: Path) -> None:
    with os.scandir(root / "photos") as entries:
        if any(entry.name.endswith(".jpg") for entry in entries):
            return
    raise DatasetError(
        root / "photos",
        f"holds no <id>.jpg images: download the URLs in {PHOTO_LIST} first, saving each as photos/<9-digit id>.jpg",
    )


def _add_gallery(root: Path, category: str, photos: set[int], products: dict[str, Product]) -> None:
    path = root / JSON_DIR / f"retrieval_{category}.json"
    shop_images: dict[str, list[ImageRef]] = {}
    for index, entry in enumerate(_read_json_list(path)):
        photo, product = _photo_and_product(path, index, entry, photos)
        shop_images.setdefault(product, []).append(ImageRef(photo_path(root, photo)))
    for item_id, images in shop_images.items():
        if item_id in products:  # listed under two categories: keep the first, gather all photos
            known = products[item_id]
            products[item_id] = Product(item_id, known.category, known.tags, known.shop_images + tuple(images))
        else:
            products[item_id] = Product(item_id, category, (make_tag("category", category),), tuple(images))


def _read_pairs(root: Path, category: str, split: str, photos: set[int], products: dict[str, Product]) -> list[Pair]:
    path = root / JSON_DIR / f"{split}_pairs_{category}.json"
    if not path.is_file():
        return []
    pairs: list[Pair] = []
    unanswerable = 0
    for index, entry in enumerate(_read_json_list(path)):
        photo, product = _photo_and_product(path, index, entry, photos)
        street = ImageRef(photo_path(root, photo), _box(path, index, entry))
        if product not in products:
            unanswerable += 1
            continue
        pairs.append(Pair(street, products[product].shop_images[0], product, split))
    if unanswerable:
        log.warning("%s: %d pairs name products without a shop photo in the gallery; skipped", path, unanswerable)
    return pairs


def _read_json_list(path: Path) -> list[Any]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"is not valid JSON ({exc.msg})", exc.lineno) from exc
    if not isinstance(entries, list):
        raise DatasetError(path, f"expected a JSON list of entries, found {type(entries).__name__}")
    return entries


def _photo_and_product(path: Path, index: int, entry: Any, photos: set[int]) -> tuple[int, str]:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("photo"), int)
        or not isinstance(entry.get("product"), int)
    ):
        raise DatasetError(path, f"entry {index}: expected integer 'photo' and 'product', found {str(entry)[:80]}")
    if entry["photo"] not in photos:
        raise DatasetError(path, f"entry {index}: photo {entry['photo']} is not listed in {PHOTO_LIST}")
    return entry["photo"], str(entry["product"])


def _box(path: Path, index: int, entry: dict[str, Any]) -> Box:
    bbox = entry.get("bbox")
    try:
        left, top = round(bbox["left"]), round(bbox["top"])  # type: ignore[index]
        return Box(left, top, left + round(bbox["width"]), top + round(bbox["height"]))  # type: ignore[index]
    except (TypeError, KeyError, ValueError) as exc:
        raise DatasetError(path, f"entry {index}: bad bbox {bbox!r}; expected left, top, width, height > 0") from exc


def _split_by_product(root: Path, pairs: list[Pair]) -> list[Pair]:
    """Drop the training pairs of products that also have test pairs, so no test product is trained on."""
    tested = {pair.item_id for pair in pairs if pair.split == "test"}
    kept = [pair for pair in pairs if pair.split == "test" or pair.item_id not in tested]
    if len(kept) < len(pairs):
        log.warning("%s: %d training pairs name test products; dropped", root / JSON_DIR, len(pairs) - len(kept))
    return kept
