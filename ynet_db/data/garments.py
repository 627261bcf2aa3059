"""Drawn garments for the generated benchmark: a product's look, sampled and rendered as an RGBA sprite.

A `Garment` holds everything that makes one product look like itself. Its tags (category, colour,
pattern, sleeve length) are coarse and shared by many products; what tells two products with the
same tags apart is finer detail that only the pixels carry: the exact hue and accent colour, the
pattern's frequency, phase, angle and duty, the neckline and hem shapes, a small print (logo), the
proportions and the fabric's texture. Rendering depends on the garment alone, so the same product
looks the same in every photo before the scene applies pose, light and clutter.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ynet_db.data.records import make_tag


@dataclass(frozen=True)
class Category:
    group: str
    """DeepFashion's top folder (img/<GROUP>/<Category>/...)."""
    folder: str
    sleeved: bool
    clothes_type: int
    """DeepFashion's clothes type: 1 upper body, 2 lower body, 3 full body."""


CATEGORIES: dict[str, Category] = {
    "tee": Category("TOPS", "Tee", True, 1),
    "jacket": Category("CLOTHING", "Jacket", True, 1),
    "dress": Category("DRESSES", "Dress", True, 3),
    "skirt": Category("CLOTHING", "Skirt", False, 2),
    "trousers": Category("TROUSERS", "Trousers", False, 2),
}
# name -> (hue in degrees or None for achromatic, saturation range, value range)
COLOURS: dict[str, tuple[float | None, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, (0.65, 0.95), (0.55, 0.9)),
    "orange": (28.0, (0.7, 0.95), (0.75, 0.95)),
    "yellow": (52.0, (0.6, 0.9), (0.8, 0.97)),
    "green": (125.0, (0.45, 0.85), (0.4, 0.8)),
    "blue": (220.0, (0.5, 0.9), (0.45, 0.85)),
    "purple": (280.0, (0.4, 0.8), (0.4, 0.75)),
    "pink": (335.0, (0.3, 0.55), (0.85, 0.97)),
    "black": (None, (0.0, 0.25), (0.08, 0.22)),
}
PATTERNS = ("solid", "striped", "checked", "dotted")
SLEEVES = ("short", "long")
NECKLINES = ("round", "v", "square", "collar")
HEMS = ("straight", "curved", "zigzag", "scalloped")
LOGOS = ("none", "circle", "ring", "star", "triangle", "square", "bar")
HUE_JITTER = 12.0
"""Degrees a product's hue may stray from its colour name's: same tag, visibly different product."""

RGB = tuple[float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Garment:
    category: str
    colour: str
    pattern: str
    sleeve: str | None
    base: RGB
    accent: RGB
    frequency: float
    """Pattern repeats across the sprite."""
    phase: float
    angle: float
    duty: float
    neckline: str
    hem: str
    logo: str
    logo_at: Point
    logo_size: float
    logo_colour: RGB
    width: float
    length: float
    buttons: int
    texture_seed: int
    texture_strength: float

    @property
    def tags(self) -> tuple[str, ...]:
        tags = [make_tag("category", self.category), make_tag("color", self.colour), make_tag("pattern", self.pattern)]
        if self.sleeve is not None:
            tags.append(make_tag("sleeve", self.sleeve))
        return tuple(tags)


def sample_garment(rng: np.random.Generator, category: str | None = None, colour: str | None = None) -> Garment:
    category = category or str(rng.choice(list(CATEGORIES)))
    colour = colour or str(rng.choice(list(COLOURS)))
    pattern = str(rng.choice(PATTERNS))
    return Garment(
        category=category,
        colour=colour,
        pattern=pattern,
        sleeve=str(rng.choice(SLEEVES)) if CATEGORIES[category].sleeved else None,
        base=_named_colour(rng, colour),
        accent=_accent_colour(rng),
        frequency=float(rng.uniform(4.0, 14.0)),
        phase=float(rng.uniform(0.0, 2 * np.pi)),
        angle=float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]) + rng.normal(0.0, 0.08)),
        duty=float(rng.uniform(0.2, 0.5)),
        neckline=str(rng.choice(NECKLINES)),
        hem=str(rng.choice(HEMS)),
        logo=str(rng.choice(LOGOS)),
        logo_at=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 0.55))),
        logo_size=float(rng.uniform(0.07, 0.14)),
        logo_colour=_accent_colour(rng),
        width=float(rng.uniform(0.85, 1.15)),
        length=float(rng.uniform(0.85, 1.1)),
        buttons=int(rng.integers(0, 6)) if category == "jacket" else 0,
        texture_seed=int(rng.integers(0, 2**31)),
        texture_strength=float(rng.uniform(0.02, 0.12)),
    )


def _named_colour(rng: np.random.Generator, name: str) -> RGB:
    hue, saturation, value = COLOURS[name]
    h = rng.uniform(0.0, 360.0) if hue is None else hue + rng.uniform(-HUE_JITTER, HUE_JITTER)
    return _hsv(h, rng.uniform(*saturation), rng.uniform(*value))


def _accent_colour(rng: np.random.Generator) -> RGB:
    kind = rng.integers(0, 3)
    if kind == 0:  # off-white
        return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.12), rng.uniform(0.88, 1.0))
    if kind == 1:  # near-black
        return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.05, 0.2))
    return _hsv(rng.uniform(0, 360), rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95))


def _hsv(hue_degrees: float, saturation: float, value: float) -> RGB:
    return colorsys.hsv_to_rgb((hue_degrees % 360.0) / 360.0, float(saturation), float(value))


def render_garment(garment: Garment, size: int) -> Image.Image:
    """The garment flat on a transparent size x size sprite."""
    parts = silhouette(garment)
    mask, seams = _rasterise(parts, garment, size)
    rgb = _fabric(garment, size) * (1.0 - 0.45 * seams[..., None])
    sprite = Image.fromarray(np.dstack([_to_bytes(rgb), _to_bytes(mask)]), "RGBA")
    _draw_details(sprite, garment, parts[0])
    return sprite


def _to_bytes(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def silhouette(garment: Garment) -> list[list[Point]]:
    """Polygons in unit coordinates (y down); the first is the body, the rest sleeves or legs."""
    draw = {"tee": _top, "jacket": _top, "dress": _dress, "skirt": _skirt, "trousers": _trousers}[garment.category]
    return draw(garment)


def _top(g: Garment) -> list[list[Point]]:
    half = (0.25 if g.category == "jacket" else 0.22) * g.width
    hem_y = min(0.15 + (0.74 if g.category == "jacket" else 0.68) * g.length, 0.95)
    body = [
        (0.5 - 0.08, 0.12),
        (0.5 - half, 0.17),
        *_hem(0.5 - half * 0.96, 0.5 + half * 0.96, hem_y, g.hem),
        (0.5 + half, 0.17),
        (0.5 + 0.08, 0.12),
    ]
    return [body, *_sleeves(g, half, 0.17)]


def _sleeves(g: Garment, half: float, shoulder_y: float) -> list[list[Point]]:
    reach, drop = (0.14, 0.2) if g.sleeve == "short" else (0.2, 0.6)
    left = [
        (0.5 - half, shoulder_y),
        (0.5 - half - reach, shoulder_y + drop),
        (0.5 - half - reach + 0.09, shoulder_y + drop + 0.04),
        (0.5 - half, shoulder_y + 0.16),
    ]
    right = [(1.0 - x, y) for x, y in left]
    return [left, right]


def _dress(g: Garment) -> list[list[Point]]:
    bodice, flare = 0.16 * g.width, 0.3 * g.width
    hem_y = min(0.12 + 0.83 * g.length, 0.96)
    body = [
        (0.43, 0.1),
        (0.5 - bodice, 0.14),
        (0.5 - bodice * 0.85, 0.42),
        *_hem(0.5 - flare, 0.5 + flare, hem_y, g.hem),
        (0.5 + bodice * 0.85, 0.42),
        (0.5 + bodice, 0.14),
        (0.57, 0.1),
    ]
    return [body, *_sleeves(g, bodice, 0.14)]


def _skirt(g: Garment) -> list[list[Point]]:
    waist, flare = 0.2 * g.width, 0.34 * g.width
    hem_y = min(0.15 + 0.62 * g.length, 0.92)
    return [[(0.5 - waist, 0.15), *_hem(0.5 - flare, 0.5 + flare, hem_y, g.hem), (0.5 + waist, 0.15)]]


def _trousers(g: Garment) -> list[list[Point]]:
    waist = 0.2 * g.width
    hem_y = min(0.08 + 0.86 * g.length, 0.96)
    seat = [(0.5 - waist, 0.08), (0.5 - waist, 0.36), (0.5 + waist, 0.36), (0.5 + waist, 0.08)]
    left = [(0.5 - waist, 0.2), *_hem(0.5 - waist - 0.02, 0.49, hem_y, g.hem), (0.5, 0.36), (0.5, 0.2)]
    right = [(1.0 - x, y) for x, y in left]
    return [seat, left, right]


def _hem(left: float, right: float, y: float, shape: str) -> list[Point]:
    """The hem from left to right: the shape is a detail two otherwise equal products differ in."""
    xs = np.linspace(left, right, 25)
    s = np.linspace(0.0, 1.0, 25)
    if shape == "curved":
        ys = y + 0.04 * np.sin(np.pi * s)
    elif shape == "zigzag":
        ys = y + 0.025 * np.abs(((s * 8) % 1.0) - 0.5) * 2
    elif shape == "scalloped":
        ys = y + 0.025 * np.abs(np.sin(np.pi * s * 6))
    else:
        ys = np.full_like(xs, y)
    return list(zip(xs.tolist(), ys.tolist()))


def _rasterise(parts: list[list[Point]], garment: Garment, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage mask and seam lines, drawn at twice the size and halved so the edges are smooth."""
    big = size * 2
    mask = Image.new("L", (big, big), 0)
    seams = Image.new("L", (big, big), 0)
    fill, ink = ImageDraw.Draw(mask), ImageDraw.Draw(seams)
    for polygon in parts:
        points = [(x * big, y * big) for x, y in polygon]
        fill.polygon(points, fill=255)
        ink.line([*points, points[0]], fill=255, width=max(2, big // 110))
    _cut_neckline(fill, garment, big)
    halve = (size, size)
    return (
        np.asarray(mask.resize(halve, Image.Resampling.BOX), dtype=np.float32) / 255.0,
        np.asarray(seams.resize(halve, Image.Resampling.BOX), dtype=np.float32) / 255.0,
    )


def _cut_neckline(fill: ImageDraw.ImageDraw, garment: Garment, big: int) -> None:
    if garment.category in ("skirt", "trousers"):
        return
    top = 0.1 if garment.category == "dress" else 0.12
    if garment.neckline == "v":
        fill.polygon([(0.43 * big, top * big), (0.57 * big, top * big), (0.5 * big, (top + 0.12) * big)], fill=0)
    elif garment.neckline == "square":
        fill.rectangle([0.44 * big, top * big, 0.56 * big, (top + 0.06) * big], fill=0)
    elif garment.neckline == "round":
        fill.ellipse([0.42 * big, (top - 0.05) * big, 0.58 * big, (top + 0.06) * big], fill=0)


def _fabric(garment: Garment, size: int) -> np.ndarray:
    """Base colour, pattern in the accent colour, and a woven texture, as size x size x 3 floats."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) / size
    along = u * np.cos(garment.angle) + v * np.sin(garment.angle)
    across = -u * np.sin(garment.angle) + v * np.cos(garment.angle)
    weight = _pattern_weight(garment, along, across)[..., None]
    colour = np.asarray(garment.base, np.float32) * (1.0 - weight) + np.asarray(garment.accent, np.float32) * weight
    return colour * _texture(garment, size)[..., None]


def _pattern_weight(g: Garment, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    if g.pattern == "solid":
        return np.zeros_like(along)
    if g.pattern == "striped":
        return _stripes(along, g)
    if g.pattern == "checked":
        return 0.5 * (_stripes(along, g) + _stripes(across, g))
    cell_u = (along * g.frequency + g.phase / (2 * np.pi)) % 1.0 - 0.5
    cell_v = (across * g.frequency + g.phase / (2 * np.pi)) % 1.0 - 0.5
    radius = 0.2 + 0.25 * g.duty
    return np.clip((radius - np.hypot(cell_u, cell_v)) * 12.0, 0.0, 1.0)


def _stripes(t: np.ndarray, g: Garment) -> np.ndarray:
    wave = np.sin(2 * np.pi * g.frequency * t + g.phase)
    return np.clip((wave - np.cos(np.pi * g.duty)) * 4.0, 0.0, 1.0)


def _texture(g: Garment, size: int) -> np.ndarray:
    """Low-frequency mottling and a fine weave, seeded per product so it is part of the product."""
    rng = np.random.default_rng(g.texture_seed)
    coarse = rng.normal(0.0, 1.0, (12, 12)).astype(np.float32)
    mottle = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BICUBIC))
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    weave = np.sin(u * (0.9 + g.texture_strength)) * np.sin(v * 0.9)
    return 1.0 + g.texture_strength * (0.6 * mottle + 0.5 * weave)


def _draw_details(sprite: Image.Image, garment: Garment, body: list[Point]) -> None:
    """Waistband, buttons and logo inside the garment's outline; a collar may stick out of it."""
    size = sprite.width
    layer = Image.new("RGBA", sprite.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    xs, ys = [x for x, _ in body], [y for _, y in body]
    left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
    if garment.category in ("skirt", "trousers"):
        band = 0.03 + 0.02 * NECKLINES.index(garment.neckline)  # waistband depth: a product detail
        draw.rectangle(
            [left * size, top * size, right * size, (top + band) * size], fill=_shade(garment.base, 0.7) + (255,)
        )
    if garment.buttons:
        _placket(draw, garment, size, top, bottom)
    if garment.logo != "none":
        cx = left + garment.logo_at[0] * (right - left)
        cy = top + garment.logo_at[1] * (bottom - top)
        _logo(draw, garment.logo, (cx * size, cy * size), garment.logo_size * size, _byte_colour(garment.logo_colour))
    inside = np.asarray(layer, dtype=np.float32)
    inside[..., 3] *= np.asarray(sprite.getchannel("A"), dtype=np.float32) / 255.0
    sprite.alpha_composite(Image.fromarray(inside.astype(np.uint8), "RGBA"))
    if garment.neckline == "collar" and garment.category not in ("skirt", "trousers"):
        _collar(ImageDraw.Draw(sprite), garment, size, top)


def _collar(draw: ImageDraw.ImageDraw, garment: Garment, size: int, top: float) -> None:
    colour = _shade(garment.accent, 1.0) + (255,)
    for side in (-1, 1):
        points = [(0.5, top + 0.02), (0.5 + side * 0.09, top - 0.01), (0.5 + side * 0.05, top + 0.09)]
        draw.polygon([(x * size, y * size) for x, y in points], fill=colour)


def _placket(draw: ImageDraw.ImageDraw, garment: Garment, size: int, top: float, bottom: float) -> None:
    draw.line(
        [(0.5 * size, (top + 0.08) * size), (0.5 * size, bottom * size)],
        fill=_shade(garment.base, 0.55) + (255,),
        width=max(1, size // 100),
    )
    radius = max(1.0, size * 0.012)
    for y in np.linspace(top + 0.15, bottom - 0.08, garment.buttons):
        cy = float(y) * size
        draw.ellipse(
            [0.5 * size + 2 * radius - radius, cy - radius, 0.5 * size + 3 * radius, cy + radius],
            fill=_byte_colour(garment.accent) + (255,),
        )


def _logo(draw: ImageDraw.ImageDraw, shape: str, centre: Point, diameter: float, colour: tuple[int, int, int]) -> None:
    cx, cy = centre
    r = diameter / 2
    box = [cx - r, cy - r, cx + r, cy + r]
    fill = colour + (255,)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(1, int(r / 3)))
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "bar":
        draw.rectangle([cx - r * 1.4, cy - r / 3, cx + r * 1.4, cy + r / 3], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon(
            list(zip((cx + radii * np.cos(angles)).tolist(), (cy - radii * np.sin(angles)).tolist())), fill=fill
        )


def _shade(colour: RGB, factor: float) -> tuple[int, int, int]:
    return _byte_colour((colour[0] * factor, colour[1] * factor, colour[2] * factor))


def _byte_colour(colour: RGB) -> tuple[int, int, int]:
    red, green, blue = (int(np.clip(round(c * 255), 0, 255)) for c in colour)
    return red, green, blue
