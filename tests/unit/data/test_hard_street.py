"""The hard street style: repeatable, unlike the classic one, and with a box that still frames the garment."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ynet_db.data import load_dataset
from ynet_db.data.garments import Garment, sample_garment
from ynet_db.data.hard_street import hard_street_photo
from ynet_db.data.scenes import Photo
from ynet_db.data.synth import SynthConfig, generate

TINY = SynthConfig(seed=7, train_products=4, test_products=2, street_per_product=2, size=32)
SIDE = 96
SEEDS = range(16)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def classic_and_hard(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("styles")
    generate(root / "classic", TINY, progress=False)
    generate(root / "hard", dataclasses.replace(TINY, street="hard"), progress=False)
    return root / "classic", root / "hard"


def test_same_seed_same_hard_photo_and_another_seed_another() -> None:
    garment = sample_garment(np.random.default_rng(1))
    first, again, other = (hard_street_photo(garment, [], SIDE, np.random.default_rng(s)) for s in (4, 4, 5))
    assert first.image.tobytes() == again.image.tobytes() and first.box == again.box
    assert first.image.tobytes() != other.image.tobytes()


def test_hard_benchmark_is_repeatable(classic_and_hard: tuple[Path, Path], tmp_path: Path) -> None:
    generate(tmp_path / "again", dataclasses.replace(TINY, street="hard"), progress=False)
    assert files_of(tmp_path / "again") == files_of(classic_and_hard[1])


def test_hard_style_redraws_the_street_photos_only(classic_and_hard: tuple[Path, Path]) -> None:
    classic, hard = (files_of(root) for root in classic_and_hard)
    assert classic.keys() == hard.keys()
    street = [name for name in classic if "/comsumer_" in name]
    shop = [name for name in classic if name.endswith("/shop_01.jpg")]
    assert len(street) == 12 and len(shop) == 6
    assert all(classic[name] != hard[name] for name in street)
    assert all(classic[name] == hard[name] for name in shop)
    assert classic["Eval/list_eval_partition.txt"] == hard["Eval/list_eval_partition.txt"]


def test_the_manifest_says_which_style_drew_it(classic_and_hard: tuple[Path, Path]) -> None:
    styles = [json.loads((root / "synth.json").read_text())["street"] for root in classic_and_hard]
    assert styles == ["classic", "hard"]


def test_hard_photos_read_back_with_boxes_inside_the_photo(classic_and_hard: tuple[Path, Path]) -> None:
    data = load_dataset(classic_and_hard[1])
    assert len(data.pairs) == 12
    for pair in data.pairs:
        box = pair.street.box
        assert box is not None and 0 <= box.left < box.right <= 32 and 0 <= box.top < box.bottom <= 32


def in_two_colours(seed: int) -> tuple[Photo, Photo]:
    """The same photo of a plain garment, once green and once magenta: they differ only where it shows."""
    shape = sample_garment(np.random.default_rng(seed))
    green: Garment = dataclasses.replace(shape, pattern="solid", logo="none", buttons=0, base=(0.1, 0.85, 0.1))
    magenta = dataclasses.replace(green, base=(0.85, 0.1, 0.85))
    return (
        hard_street_photo(green, [], SIDE, np.random.default_rng([seed, 1])),
        hard_street_photo(magenta, [], SIDE, np.random.default_rng([seed, 1])),
    )


def garment_pixels(pair: tuple[Photo, Photo]) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns where the two photos differ by more than light, contrast and noise can make."""
    a, b = (np.asarray(photo.image, np.int16) for photo in pair)
    return np.nonzero(np.abs(a - b).max(axis=2) > 40)


@pytest.fixture(scope="module")
def drawn_twice() -> list[tuple[Photo, Photo]]:
    return [in_two_colours(seed) for seed in SEEDS]


def test_the_box_covers_every_visible_part_of_the_garment(drawn_twice: list[tuple[Photo, Photo]]) -> None:
    blur = 3  # the camera's blur spreads an edge by a pixel or two
    for green, magenta in drawn_twice:
        box = green.box
        assert box == magenta.box and 0 <= box.left < box.right <= SIDE and 0 <= box.top < box.bottom <= SIDE
        rows, columns = garment_pixels((green, magenta))
        assert len(rows) > 100
        assert rows.min() >= box.top - blur and rows.max() < box.bottom + blur
        assert columns.min() >= box.left - blur and columns.max() < box.right + blur


def test_the_box_is_tight_where_nobody_stands_at_the_garments_edge(drawn_twice: list[tuple[Photo, Photo]]) -> None:
    filled = []
    for pair in drawn_twice:
        rows, columns = garment_pixels(pair)
        box = pair[0].box
        filled.append(min((np.ptp(columns) + 1) / (box.right - box.left), (np.ptp(rows) + 1) / (box.bottom - box.top)))
    assert np.mean(np.array(filled) > 0.75) >= 0.8


def test_scale_ranges_from_a_third_of_the_photo_to_all_of_it_and_out_of_frame(
    drawn_twice: list[tuple[Photo, Photo]],
) -> None:
    heights = [(pair[0].box.bottom - pair[0].box.top) / SIDE for pair in drawn_twice]
    assert min(heights) < 0.45 and max(heights) > 0.85
    cut_off = 0
    for pair in drawn_twice:
        rows, columns = garment_pixels(pair)
        cut_off += int(min(rows.min(), columns.min()) == 0 or max(rows.max(), columns.max()) == SIDE - 1)
    assert 0 < cut_off < len(drawn_twice)
