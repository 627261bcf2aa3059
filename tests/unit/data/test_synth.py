from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ynet_db.data import load_dataset
from ynet_db.data.garments import render_garment, sample_garment
from ynet_db.data.scenes import shop_photo, street_photo
from ynet_db.data.synth import MANIFEST, SynthConfig, generate, product_garment

TINY = SynthConfig(seed=7, train_products=4, test_products=2, street_per_product=2, size=32)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    generate(root, TINY, progress=False)
    return root


def test_same_seed_same_bytes(tiny: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", TINY, progress=False)
    assert files_of(tmp_path / "again") == files_of(tiny)


def test_classic_street_photo_is_the_one_drawn_before_street_styles() -> None:
    """Pinned from the code before `--street`: the classic style, and every number measured on it, stays.

    Pinned under Pillow 13 and NumPy 2.4; if an upgrade of either fails this, it redraws the benchmark
    (bump GENERATOR_VERSION and re-pin), as a change of the drawing code would.
    """
    photo = street_photo(product_garment(SynthConfig(seed=0), 0), [], 224, np.random.default_rng([0, 0, 2, 1]))
    assert hashlib.sha256(photo.image.tobytes()).hexdigest() == (
        "6334204807640736992b0d33995dd68b8f272e8489e0df10b44c8a2199dfc900"
    )
    assert (photo.box.left, photo.box.top, photo.box.right, photo.box.bottom) == (76, 82, 143, 224)


def test_default_benchmark_files_are_the_ones_drawn_before_street_styles(tiny: Path) -> None:
    """Images and list files as the code before `--street` wrote them; the manifest gained the style."""
    digest = hashlib.sha256()
    for name, content in files_of(tiny).items():
        if name != MANIFEST:
            digest.update(name.encode() + content)
    assert digest.hexdigest() == "1cfce768f9398498d6e4a475557d2d3312e20af2326e7fa5ef131d274ae90f73"
    assert json.loads((tiny / MANIFEST).read_text())["street"] == "classic"


def test_worker_processes_do_not_change_the_bytes(tiny: Path, tmp_path: Path) -> None:
    generate(tmp_path / "parallel", TINY, workers=2, progress=False)
    assert files_of(tmp_path / "parallel") == files_of(tiny)


def test_another_seed_draws_other_pictures(tiny: Path, tmp_path: Path) -> None:
    generate(tmp_path / "other", SynthConfig(seed=8, train_products=4, test_products=2, size=32), progress=False)
    ours, theirs = files_of(tiny), files_of(tmp_path / "other")
    assert {n for n in ours if n.endswith(".jpg")} & {n for n in theirs if n.endswith(".jpg")}  # same layout...
    assert all(ours[n] != theirs[n] for n in ours if n in theirs and n.endswith(".jpg"))  # ...other pixels


def test_reads_back_as_deepfashion(tiny: Path) -> None:
    data = load_dataset(tiny)
    assert data.name == "deepfashion-consumer2shop"
    assert sorted(data.products) == [f"id_{i:08d}" for i in range(1, 7)]
    assert (len(data.split("train").products), len(data.split("test").products)) == (4, 2)
    assert len(data.pairs) == 12
    first = data.pairs[0]
    assert first.street.path.name == "comsumer_01.jpg" and first.shop.path.name == "shop_01.jpg"
    for pair in data.pairs:
        for ref in (pair.street, pair.shop):
            assert (
                ref.box is not None
                and 0 <= ref.box.left < ref.box.right <= 32
                and 0 <= ref.box.top < ref.box.bottom <= 32
            )
            with Image.open(ref.path) as image:
                assert (image.format, image.size, image.mode) == ("JPEG", (32, 32), "RGB")


def test_tags_come_from_the_garment(tiny: Path) -> None:
    data = load_dataset(tiny)
    for index, item in enumerate(sorted(data.products)):
        garment = product_garment(TINY, index)
        assert data.products[item].tags == garment.tags
        assert data.products[item].category.lower() == garment.category


def test_many_products_share_each_tag_combination() -> None:
    config = SynthConfig(seed=0)
    combinations = Counter(product_garment(config, i).tags for i in range(config.products))
    assert config.products / len(combinations) >= 8
    assert max(combinations.values()) > 1


def test_rendering_depends_on_the_garment_alone() -> None:
    garment = sample_garment(np.random.default_rng(3))
    assert render_garment(garment, 64).tobytes() == render_garment(garment, 64).tobytes()


def test_shop_box_frames_the_product_not_its_companions() -> None:
    rng = np.random.default_rng(5)
    product = sample_garment(rng, category="skirt", colour="red")
    companion = sample_garment(rng, category="trousers", colour="blue")
    photo = shop_photo(product, [companion], 128, rng)
    crop = np.asarray(photo.image.crop((photo.box.left, photo.box.top, photo.box.right, photo.box.bottom)), np.float32)
    red_share = np.mean(crop[..., 0] > crop[..., 2] + 40)
    assert photo.box.right - photo.box.left < 90 and red_share > 0.2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train_products": 0, "test_products": 0}, "at least one product"),
        ({"street_per_product": 0}, "street photos per product must be 1-99"),
        ({"size": 16}, "at least 32 pixels"),
        ({"street": "fancy"}, "unknown street style 'fancy'; choose one of classic, hard"),
    ],
)
def test_config_refuses_what_it_cannot_draw(changes: dict[str, int | str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthConfig(**changes)
