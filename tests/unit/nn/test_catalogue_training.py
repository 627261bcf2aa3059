"""Catalogue-only training: street views made from catalogue photos, tag attention learned from the tags."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageChops

from ynet_db.cli import main
from ynet_db.data.records import Box, ImageRef, Product
from ynet_db.nn.augment import STREET_VIEW_RECIPES, street_view
from ynet_db.nn.catalogue_training import (
    CataloguePlan,
    attended_box,
    attended_refs,
    cache_catalogue,
    cache_shop_side,
    train_from_catalogue,
    training_rows,
)
from ynet_db.nn.checkpoint import load_checkpoint
from ynet_db.nn.tags import TagVocabulary

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def two_garments(path: Path, product: str, other: str, product_left: bool) -> None:
    """A 64x64 shop photo: the product's colour block on one half, another garment's on the other."""
    image = Image.new("RGB", (64, 64), (235, 235, 235))
    left, right = (product, other) if product_left else (other, product)
    image.paste(COLOURS[left], (4, 8, 28, 56))
    image.paste(COLOURS[right], (36, 8, 60, 56))
    image.save(path)


def catalogue(folder: Path, count: int) -> dict[str, Product]:
    rng = random.Random(1)
    names = sorted(COLOURS)
    products = {}
    for i in range(count):
        colour = names[i % len(names)]
        other = rng.choice([c for c in names if c != colour])
        path = folder / f"p{i:02d}.png"
        two_garments(path, colour, other, product_left=bool(i % 2))
        products[f"p{i:02d}"] = Product(f"p{i:02d}", "top", (f"color:{colour}",), (ImageRef(path),))
    return products


@pytest.mark.parametrize("recipe", STREET_VIEW_RECIPES)
def test_a_street_view_is_a_new_photo_of_the_same_size_and_repeatable(recipe: str) -> None:
    photos = [Image.new("RGB", (64, 48), colour) for colour in COLOURS.values()]
    first = street_view(photos[0], photos[1:], random.Random(3), recipe=recipe)
    again = street_view(photos[0], photos[1:], random.Random(3), recipe=recipe)
    assert first.size == (64, 48) and first.mode == "RGB"
    assert ImageChops.difference(first, again).getbbox() is None
    assert ImageChops.difference(first, photos[0]).getbbox() is not None


def test_recipe_v3_adds_clutter_folds_and_sensor_to_v2_and_an_unknown_recipe_is_refused() -> None:
    photos = [two_colour_photo(colour) for colour in COLOURS.values()]
    v2 = street_view(photos[0], photos[1:3], random.Random(5), recipe="v2")
    v3 = street_view(photos[0], photos[1:3], random.Random(5), recipe="v3")
    assert ImageChops.difference(v2, v3).getbbox() is not None
    # sensor noise and clutter: v3's pixels take more distinct colours than v2's
    assert len(v3.getcolors(1 << 24) or []) > len(v2.getcolors(1 << 24) or [])
    with pytest.raises(ValueError, match="unknown street-view recipe 'v9'"):
        street_view(photos[0], photos[1:3], random.Random(5), recipe="v9")
    with pytest.raises(ValueError, match="unknown street-view recipe 'v9'"):
        CataloguePlan(street_views="v9")


def two_colour_photo(colour: tuple[int, int, int]) -> Image.Image:
    """A garment-like block of `colour` with a stripe, on a plain light backdrop."""
    photo = Image.new("RGB", (96, 96), (235, 235, 230))
    photo.paste(colour, (24, 16, 72, 84))
    photo.paste((20, 20, 20), (24, 40, 72, 46))
    return photo


def test_tag_prediction_moves_the_attention_onto_the_tagged_garment(tmp_path: Path) -> None:
    """Each photo shows two garments; only the tags say which one is the product. Before training the
    attention is uniform (half on each side); trained from the catalogue, it rests on the product's side."""
    torch.manual_seed(0)
    products = catalogue(tmp_path, 32)
    plan = CataloguePlan(
        epochs=10,
        views=1,
        embedding_dim=16,
        batch_size=8,
        lr=0.01,
        input_size=128,
        map_size=4,
        distill_weight=0.0,
        tag_weight=5.0,
    )
    network, vocabulary, losses = train_from_catalogue(products, plan, cache_dir=tmp_path / "cache", progress=False)
    assert losses[-1] < losses[0]
    data = cache_catalogue(
        network, products, vocabulary, views=1, seed=0, cache_dir=tmp_path / "cache", device=torch.device("cpu")
    )
    with torch.inference_mode():
        _, weights = network.shop_vectors(data.shop.float(), data.tags)  # [P, 16]: a 4x4 map, row-major
    left = weights.view(-1, 4, 4)[:, :, :2].sum(dim=(1, 2))
    product_left = torch.tensor([int(item[1:]) % 2 == 1 for item in data.items])
    on_product = torch.where(product_left, left, 1 - left)
    assert float(on_product.mean()) > 0.65, on_product


def test_the_same_seed_trains_the_same_network(tmp_path: Path) -> None:
    """Nothing is left to the global random state: the crops, and so the cached views, repeat for a seed."""
    products = catalogue(tmp_path, 8)
    plan = CataloguePlan(epochs=1, tag_epochs=1, views=1, embedding_dim=8, batch_size=4, input_size=64, map_size=2)
    trained = []
    for run in range(2):
        torch.manual_seed(run)  # a different global state each time
        network, _, losses = train_from_catalogue(products, plan, cache_dir=tmp_path / f"cache{run}", progress=False)
        trained.append((network.state_dict(), losses))
    (first, first_losses), (second, second_losses) = trained
    assert first_losses == second_losses
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_train_from_catalogue_file_writes_a_checkpoint_with_its_held_out_check(tmp_path: Path) -> None:
    products = catalogue(tmp_path, 12)
    lines = [
        json.dumps(
            {"id": item, "category": "top", "image": product.shop_images[0].path.name, "tags": list(product.tags)}
        )
        for item, product in products.items()
    ]
    (tmp_path / "catalogue.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    args = ["train", str(tmp_path / "catalogue.jsonl"), "--from-catalogue", "--out", str(out), "--epochs", "1"]
    result = CliRunner().invoke(main, [*args, "--embedding-dim", "16", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "held-out check (2 products never trained on" in result.output
    info = load_checkpoint(out / "model.safetensors").info
    check = info.metrics["catalogue_check"]
    assert check["queries"] == 2 and isinstance(check["beats_default"], bool)
    assert set(check["trained"]) == set(check["default"]) >= {"1", "20"}
    assert info.metrics["trained_from"] == "catalogue" and not info.rerank_measured_to_help
    assert set(info.vocabulary.tags) <= {f"color:{c}" for c in COLOURS}


def test_training_rows_use_a_second_photo_as_the_street_side(tmp_path: Path) -> None:
    one, two = ImageRef(tmp_path / "a.png"), ImageRef(tmp_path / "b.png")
    products = {"x": Product("x", "top", (), (one, two)), "y": Product("y", "top", (), (one,))}
    items, shop, street = training_rows(products)
    assert items == ["x", "y"] and shop == [one, one] and street == [two, one]
    assert len(TagVocabulary.build([()])) == 0


def test_attended_box_covers_the_cells_the_attention_picks_with_a_margin() -> None:
    weights = torch.full((4, 4), 0.01)
    weights[1:3, 2] = torch.tensor([0.4, 0.3])  # one column, two rows; 0.1 is below half the peak
    weights[0, 0] = 0.1
    # cells are 16x12 pixels on a 64x48 photo; half a cell of margin on each side
    assert attended_box(weights, 64, 48, keep=0.5) == Box(24, 6, 56, 42)
    assert attended_box(weights, 64, 48, keep=0.2) == Box(0, 0, 56, 42)
    assert attended_box(weights, 64, 48) == Box(0, 0, 56, 42)  # the default keeps cells down to 0.1 of the peak
    assert attended_box(torch.ones(4, 4), 64, 48) == Box(0, 0, 64, 48)  # uniform: the whole photo


def test_street_views_are_cut_from_the_tagged_garment(tmp_path: Path) -> None:
    """After tag prediction alone, the crop of each two-garment photo lies on the product's half: the street
    views then show the product, as a shopper's photo does, not the whole shop scene."""
    torch.manual_seed(0)
    products = catalogue(tmp_path, 32)
    plan = CataloguePlan(
        epochs=0, tag_epochs=40, views=1, embedding_dim=16, batch_size=8, input_size=128, map_size=4, distill_weight=0.0
    )
    network, vocabulary, _ = train_from_catalogue(products, plan, cache_dir=tmp_path / "cache", progress=False)
    side = cache_shop_side(network, products, vocabulary, cache_dir=tmp_path / "cache", device=torch.device("cpu"))
    crops = attended_refs(network, side, cache_dir=tmp_path / "cache", device=torch.device("cpu"))
    on_product = tight = 0
    for item, crop in zip(side.items, crops, strict=True):
        assert crop.path == products[item].shop_images[0].path and crop.box is not None
        centre = (crop.box.left + crop.box.right) / 2
        on_product += (centre < 32) == (int(item[1:]) % 2 == 1)  # odd items have the product on the left
        # on the plain backdrop the box is the garment's outline (24 x 48) and its margin, not map cells
        tight += crop.box.right - crop.box.left <= 28 and crop.box.bottom - crop.box.top <= 52
    # chance puts half the crops on the product's side (23 or more of 32 by chance: p = 0.01); the seeds
    # 0, 1 and 2 put 24, 26 and 26 there (0.8 passed only with the head's unseeded start of before)
    assert on_product >= 0.7 * len(crops), on_product
    assert tight >= 0.8 * len(crops), tight
    # without the tag stage the attention is uniform and the crop is the whole photo
    untrained, vocabulary, _ = train_from_catalogue(
        products, CataloguePlan(epochs=0, tag_epochs=0, embedding_dim=16, input_size=128, map_size=4), progress=False
    )
    side = cache_shop_side(untrained, products, vocabulary, cache_dir=None, device=torch.device("cpu"))
    whole = attended_refs(untrained, side, cache_dir=None, device=torch.device("cpu"))
    assert {crop.box for crop in whole} == {Box(0, 0, 64, 64)}


def test_an_unreadable_photo_is_not_cut_and_does_not_stop_training(tmp_path: Path) -> None:
    products = catalogue(tmp_path, 8)
    broken = products["p00"].shop_images[0].path
    broken.write_bytes(b"not a picture")
    plan = CataloguePlan(epochs=1, tag_epochs=1, views=1, embedding_dim=16, batch_size=4, input_size=128, map_size=4)
    network, vocabulary, losses = train_from_catalogue(products, plan, progress=False)
    assert len(losses) == 1
    side = cache_shop_side(network, products, vocabulary, cache_dir=None, device=torch.device("cpu"), progress=False)
    crops = attended_refs(network, side, cache_dir=None, device=torch.device("cpu"))
    by_path = {crop.path: crop.box for crop in crops}
    assert by_path[broken] is None  # left whole: the trunk cache records why it could not be read
    assert all(box is not None for path, box in by_path.items() if path != broken)
