"""The generated cross-domain benchmark, written in the DeepFashion Consumer-to-Shop layout.

Every product is a drawn garment (`garments.py`) with one shop photo and a few street photos
(`scenes.py`). It carries the two difficulties the method is about:
- shop photos show the product beside one or two other garments of similar size (another
  category, or the same category in another colour), so only the tags say which one is for sale;
- street photos show it posed, scaled, lit and blurred in clutter, partly occluded; in the "hard"
  street style (`hard_street.py`) in photo-like places, behind passers-by, at stronger scale and pose.
Tags (category, colour, pattern, sleeve length) are shared by many products; products differ in
finer detail, so tags alone cannot identify one.

Everything is a pure function of the seed: each product and each photo draws from its own numpy
Generator seeded by (seed, product, photo), so the files are byte-identical for a seed whatever
the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ynet_db.data.deepfashion import ATTRIBUTE_ITEMS, ATTRIBUTE_NAMES, ATTRIBUTE_TYPES, BOXES, ITEMS, PARTITION
from ynet_db.data.garments import CATEGORIES, COLOURS, PATTERNS, SLEEVES, Garment, sample_garment
from ynet_db.data.hard_street import hard_street_photo
from ynet_db.data.records import Box, DatasetError
from ynet_db.data.scenes import Photo, shop_photo, street_photo

GENERATOR_VERSION = 1
"""Bump when the same seed would draw different pictures, so old numbers are not compared to new."""
STREET_STYLES: dict[str, Callable[[Garment, list[Garment], int, np.random.Generator], Photo]] = {
    "classic": street_photo,
    "hard": hard_street_photo,
}
"""How street photos are drawn: "classic" is the benchmark every earlier number was measured on."""
MANIFEST = "synth.json"
SHOP_QUALITY = 92
ATTRIBUTE_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("color", tuple(COLOURS)),
    ("pattern", PATTERNS),
    ("sleeve", SLEEVES),
)
"""list_attr_type.txt rows and the attributes of each (list_attr_cloth.txt), in column order."""


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    train_products: int = 2000
    test_products: int = 1000
    street_per_product: int = 2
    size: int = 224
    street: str = "classic"
    """The street style, a key of STREET_STYLES; the shop photos are the same in every style."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("the seed must be 0 or more")
        if self.train_products < 0 or self.test_products < 0 or self.train_products + self.test_products < 1:
            raise ValueError("the benchmark needs at least one product")
        if self.street_per_product < 1 or self.street_per_product > 99:
            raise ValueError("street photos per product must be 1-99")
        if self.size < 32:
            raise ValueError("images must be at least 32 pixels on a side")
        if self.street not in STREET_STYLES:
            raise ValueError(f"unknown street style {self.street!r}; choose one of {', '.join(STREET_STYLES)}")

    @property
    def products(self) -> int:
        return self.train_products + self.test_products

    def split_of(self, index: int) -> str:
        return "train" if index < self.train_products else "test"


@dataclass(frozen=True)
class ImageRecord:
    name: str
    """Path relative to the root, as the list files write it."""
    source: int
    """DeepFashion's source type: 1 shop, 2 consumer."""
    box: Box


@dataclass(frozen=True)
class ProductRecord:
    index: int
    garment: Garment
    shop: ImageRecord
    street: tuple[ImageRecord, ...]

    @property
    def item_id(self) -> str:
        return item_id(self.index)


def item_id(index: int) -> str:
    return f"id_{index + 1:08d}"


def product_garment(config: SynthConfig, index: int) -> Garment:
    return sample_garment(np.random.default_rng([config.seed, index, 0]))


def generate(out_dir: Path, config: SynthConfig, *, workers: int = 1, progress: bool = True) -> list[ProductRecord]:
    """Draw every product's photos into `out_dir` and write the release's list files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = ((out_dir, config, index) for index in range(config.products))
    records = list(
        tqdm(_run(jobs, workers), total=config.products, unit="product", disable=not progress, desc="drawing")
    )
    write_lists(out_dir, config, records)
    return records


def _run(jobs: Iterator[tuple[Path, SynthConfig, int]], workers: int) -> Iterator[ProductRecord]:
    if workers <= 1:
        yield from (_draw_product(job) for job in jobs)
        return
    # spawn, not fork: the caller may hold threads (torch, tqdm's monitor) that fork would copy half-way.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_draw_product, jobs, chunksize=8)


def _draw_product(job: tuple[Path, SynthConfig, int]) -> ProductRecord:
    out_dir, config, index = job
    garment = product_garment(config, index)
    folder = _folder(garment, index)
    (out_dir / folder).mkdir(parents=True, exist_ok=True)
    shop_rng = np.random.default_rng([config.seed, index, 1])
    shop = _save(
        out_dir,
        f"{folder}/shop_01.jpg",
        1,
        shop_photo(garment, _shop_companions(garment, shop_rng), config.size, shop_rng),
        SHOP_QUALITY,
    )
    street = []
    for number in range(1, config.street_per_product + 1):
        rng = np.random.default_rng([config.seed, index, 2, number])
        companions = [sample_garment(rng)] if rng.uniform() < 0.4 else []
        photo = STREET_STYLES[config.street](garment, companions, config.size, rng)
        # The release spells consumer "comsumer"; so do we, so the reader is tested on the real spelling.
        street.append(_save(out_dir, f"{folder}/comsumer_{number:02d}.jpg", 2, photo, int(rng.integers(55, 91))))
    return ProductRecord(index, garment, shop, tuple(street))


def _folder(garment: Garment, index: int) -> str:
    category = CATEGORIES[garment.category]
    return f"img/{category.group}/{category.folder}/{item_id(index)}"


def _shop_companions(product: Garment, rng: np.random.Generator) -> list[Garment]:
    """One or two other garments that differ from the product in category or colour, never in neither."""
    companions = []
    for _ in range(int(rng.integers(1, 3))):
        if rng.uniform() < 0.7:
            category = str(rng.choice([c for c in CATEGORIES if c != product.category]))
            companions.append(sample_garment(rng, category=category))
        else:
            colour = str(rng.choice([c for c in COLOURS if c != product.colour]))
            companions.append(sample_garment(rng, category=product.category, colour=colour))
    return companions


def _save(out_dir: Path, name: str, source: int, photo: Photo, quality: int) -> ImageRecord:
    # optimize=False and no EXIF keep the bytes a function of the pixels alone.
    photo.image.save(out_dir / name, "JPEG", quality=quality, optimize=False)
    return ImageRecord(name, source, photo.box)


def write_lists(out_dir: Path, config: SynthConfig, records: list[ProductRecord]) -> None:
    """Eval/ and Anno/ files as the release writes them: a count line, a header line, rows."""
    _write(
        out_dir / PARTITION,
        "image_pair_name_1 image_pair_name_2 item_id evaluation_status",
        [f"{street.name} {r.shop.name} {r.item_id} {config.split_of(r.index)}" for r in records for street in r.street],
    )
    _write(
        out_dir / BOXES,
        "image_name clothes_type source_type x_1 y_1 x_2 y_2",
        [
            _box_line(image, CATEGORIES[r.garment.category].clothes_type)
            for r in records
            for image in (r.shop, *r.street)
        ],
    )
    _write(out_dir / ITEMS, "item_id", [r.item_id for r in records])
    _write(out_dir / ATTRIBUTE_TYPES, "attribute_type_name", [field for field, _ in ATTRIBUTE_FIELDS])
    _write(
        out_dir / ATTRIBUTE_NAMES,
        "attribute_name attribute_type",
        [f"{value} {number}" for number, (_, values) in enumerate(ATTRIBUTE_FIELDS, start=1) for value in values],
    )
    _write(
        out_dir / ATTRIBUTE_ITEMS,
        "item_id attribute_labels",
        [f"{r.item_id} {_attribute_labels(r.garment)}" for r in records],
    )
    manifest = {"generator_version": GENERATOR_VERSION, "format": "deepfashion-consumer2shop", **asdict(config)}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def describe(root: Path) -> str | None:
    """How `generate` drew the dataset at `root`, from its manifest; None for a dataset it did not draw."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        made = (
            f"ynet-db dataset synth (generator version {manifest['generator_version']}), seed {manifest['seed']}, "
            f"{manifest['size']} px, street style {manifest.get('street', 'classic')}"  # before styles: classic
        )
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(path, f"not a manifest written by ynet-db dataset synth ({error!r})") from error
    return made


def _box_line(image: ImageRecord, clothes_type: int) -> str:
    box = image.box
    return f"{image.name} {clothes_type} {image.source} {box.left} {box.top} {box.right} {box.bottom}"


def _attribute_labels(garment: Garment) -> str:
    chosen = {"color": garment.colour, "pattern": garment.pattern, "sleeve": garment.sleeve}
    return " ".join("1" if chosen[field] == value else "-1" for field, values in ATTRIBUTE_FIELDS for value in values)


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([str(len(rows)), header, *rows]) + "\n", encoding="utf-8")
