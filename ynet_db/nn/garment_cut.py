"""A garment cut out of a catalogue photo on a plain backdrop (issue 9 item 5).

Shops photograph products on a plain, light backdrop. There, the garment's outline is found without
any model: pixels that differ from the backdrop's colour, the connected piece at a given point, its
holes filled. A street view pasted from that outline shows the garment on the new background; pasted
as a rectangle, it carries a slab of studio backdrop that no shopper's photo has. A photo whose
border is not one colour (a model on a street, a room) has no backdrop to remove: `garment_mask`
returns None and the caller keeps the rectangle.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ynet_db.data.records import Box

BACKDROP_TOLERANCE = 28
"""Largest difference in any channel (0-255) from the backdrop's colour that still counts as backdrop:
the backdrop's own gradient and JPEG noise stay under it (at most 8 on the generated shop photos); a
garment's colours do not, nor the darker part of its drop shadow, which then goes with the garment."""
PLAIN_BORDER_SHARE = 0.9
"""Share of the border's pixels that must be the backdrop's colour for the photo to have a backdrop."""
MASK_SIDE = 112
"""The outline is traced at most this many pixels wide, then scaled back to the photo: a garment's
outline needs no more, and the piece grows one pixel per step."""


def backdrop_colour(rgb: np.ndarray) -> np.ndarray | None:
    """The colour of a plain backdrop (the border's median), or None when the border is not one colour."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    colour = np.median(border, axis=0)
    plain = (np.abs(border - colour).max(axis=1) <= BACKDROP_TOLERANCE).mean() >= PLAIN_BORDER_SHARE
    return colour if plain else None


def garment_mask(image: Image.Image, at: tuple[float, float] | None = None) -> Image.Image | None:
    """The 'L' mask (255 = garment) of the foreground piece nearest `at` (pixels; default the centre),
    holes filled; None when the photo has no plain backdrop or nothing stands on it."""
    shrink = min(1.0, MASK_SIDE / max(image.size))
    if shrink < 1.0:
        small = image.resize((max(1, round(image.width * shrink)), max(1, round(image.height * shrink))))
        point = (at[0] * shrink, at[1] * shrink) if at is not None else None
        mask = _mask(small, point)
        return None if mask is None else mask.resize(image.size).point(lambda v: 255 if v >= 128 else 0)
    return _mask(image, at)


def _mask(image: Image.Image, at: tuple[float, float] | None) -> Image.Image | None:
    rgb = np.asarray(image.convert("RGB"))
    colour = backdrop_colour(rgb)
    if colour is None:
        return None
    foreground = np.abs(rgb.astype(np.int16) - colour).max(axis=2) > BACKDROP_TOLERANCE
    # Close pinholes and hairline gaps (a pattern's backdrop-coloured stripes) before taking pieces.
    mask = Image.fromarray(foreground.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))
    mask = mask.filter(ImageFilter.MinFilter(5))
    closed = np.asarray(mask) > 0
    ys, xs = np.nonzero(closed)
    if len(xs) == 0:
        return None
    x, y = at if at is not None else (image.width / 2, image.height / 2)
    nearest = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return Image.fromarray(filled(piece_at(closed, int(ys[nearest]), int(xs[nearest]))).astype(np.uint8) * 255)


def cutout(image: Image.Image) -> Image.Image:
    """RGBA: the garment nearest the centre cut from its plain backdrop, or the whole photo where it has none."""
    cut = image.convert("RGBA")
    mask = garment_mask(image)
    bounds = mask.getbbox() if mask is not None else None
    if mask is not None and bounds is not None:  # a piece of a few pixels can vanish in the scaled mask
        cut.putalpha(mask)
        cut = cut.crop(bounds)
    return cut


def piece_at(foreground: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 4-connected piece of `foreground` [H, W] bool holding (row, col): grown from there one step at
    a time, never leaving the foreground (a few hundred vector steps, not a pixel-by-pixel fill)."""
    piece = np.zeros_like(foreground)
    piece[row, col] = True
    while True:
        grown = piece.copy()
        grown[1:] |= piece[:-1]
        grown[:-1] |= piece[1:]
        grown[:, 1:] |= piece[:, :-1]
        grown[:, :-1] |= piece[:, 1:]
        grown &= foreground
        if np.array_equal(grown, piece):
            return piece
        piece = grown


def filled(piece: np.ndarray) -> np.ndarray:
    """`piece` [H, W] bool with its holes filled: every pixel with the piece on all four sides of it, along
    its row and its column (a spot in a pattern; not the gap between two legs, open at the bottom)."""

    def between(axis: int) -> np.ndarray:
        before = np.maximum.accumulate(piece, axis=axis)
        after = np.flip(np.maximum.accumulate(np.flip(piece, axis=axis), axis=axis), axis=axis)
        return before & after

    return piece | (between(0) & between(1))


def mask_box(mask: Image.Image, margin: int = 2) -> Box | None:
    """The pixel box of a mask's garment, grown by `margin` pixels; None for an empty mask."""
    bounds = mask.getbbox()
    if bounds is None:
        return None
    left, top, right, bottom = bounds
    return Box(
        max(0, left - margin), max(0, top - margin), min(mask.width, right + margin), min(mask.height, bottom + margin)
    )
