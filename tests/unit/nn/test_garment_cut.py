"""Cutting a garment out of a plain backdrop: the piece at a point, its holes filled, and no cut without a backdrop."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ynet_db.data.records import Box
from ynet_db.nn.garment_cut import cutout, garment_mask, mask_box

BACKDROP = (232, 236, 234)


def shop_photo() -> Image.Image:
    """Two garments on a plain backdrop, apart; the left one has a backdrop-coloured hole (a white spot)."""
    image = Image.new("RGB", (96, 64), BACKDROP)
    draw = ImageDraw.Draw(image)
    draw.rectangle((6, 8, 40, 56), fill=(200, 30, 30))
    draw.ellipse((18, 24, 28, 34), fill=BACKDROP)
    draw.rectangle((56, 12, 90, 50), fill=(30, 40, 200))
    return image


def test_the_piece_at_a_point_is_cut_out_with_its_holes_filled() -> None:
    left = garment_mask(shop_photo(), at=(10, 10))
    assert left is not None and mask_box(left, margin=0) == Box(6, 8, 41, 57)
    assert left.getpixel((23, 29)) == 255  # the spot inside the garment is garment
    assert left.getpixel((70, 30)) == 0  # the other garment is not
    right = garment_mask(shop_photo(), at=(95, 63))  # on the backdrop: the nearest piece
    assert right is not None and mask_box(right, margin=0) == Box(56, 12, 91, 51)


def test_a_photo_without_a_plain_backdrop_is_not_cut() -> None:
    rng = np.random.default_rng(0)
    street = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    assert garment_mask(street) is None
    assert garment_mask(Image.new("RGB", (32, 32), BACKDROP)) is None  # a backdrop with nothing on it
    whole = cutout(street)
    assert whole.size == street.size and whole.getchannel("A").getextrema() == (255, 255)


def test_a_cutout_is_cropped_to_the_garment_nearest_the_centre() -> None:
    piece = cutout(shop_photo().crop((0, 0, 48, 64)))
    assert piece.mode == "RGBA" and piece.size == (35, 49)
    assert piece.getpixel((2, 2)) == (200, 30, 30, 255)
    assert piece.getchannel("A").getextrema() == (255, 255)  # the spot is filled: the garment has no hole
