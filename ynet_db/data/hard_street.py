"""The hard street style of the generated benchmark: photo-like places, passers-by, stronger scale and pose.

The classic street photo (`scenes.street_photo`) puts the drawn garment on drawn clutter. This style
keeps the garment, its drape and the phone camera, and makes the rest more like a photo where that
costs little (a few small noise grids, resizes and polygons per photo):
- a place instead of shapes: a wall above a floor, each a fractal (multi-octave value noise) texture
  with colour variation, sometimes floor tiles receding to the horizon, under a soft light;
- people (head, torso, arms, legs) in skin tones and clothing colours passing in front of part of the
  garment;
- the garment from about 0.3 to 1.0 of the photo, sometimes partly out of frame, turned and tilted
  further than in the classic style;
- uneven light (a shadow band, a vignette) and stronger sensor noise.
Each function takes its own numpy Generator: a photo is a pure function of its seed.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ynet_db.data.garments import Garment, render_garment
from ynet_db.data.records import Box
from ynet_db.data.scenes import (
    SKIN_TONES,
    Photo,
    camera,
    draped,
    paste_with_shadow,
    perspective,
    placed_box,
    posed,
    random_spot,
    to_bytes,
)

Colour = tuple[int, int, int, int]
# A standing figure in units of its height, origin at the top of the head, x to the figure's left.
HEAD = (0.0, 0.075, 0.055, 0.075)
"""Centre x, centre y, half width, half height."""
TORSO = ((-0.15, 0.17), (0.15, 0.17), (0.12, 0.56), (-0.12, 0.56))
SHOULDER_X, SHOULDER_Y, ARM_LENGTH, ARM_WIDTH = 0.135, 0.19, 0.36, 0.065
HIP_Y, LEG_WIDTH = 0.54, 0.1


def hard_street_photo(product: Garment, companions: list[Garment], size: int, rng: np.random.Generator) -> Photo:
    """The product as a passer-by's phone sees it in a real place: turned, near or far, behind people."""
    canvas = _place(size, rng)
    for companion in companions:  # other clothes in view, as in the classic style
        sprite = posed(render_garment(companion, round(size * rng.uniform(0.4, 0.9))), rng, size)
        paste_with_shadow(canvas, sprite, random_spot(sprite, size, rng, inside=0.5))
    # The garment fills about 0.8 of its sprite, so sprites of 0.35-1.2 photo sides give garments of 0.3-1.0.
    sprite = draped(_turned(render_garment(product, round(size * rng.uniform(0.35, 1.2))), rng), rng)
    at = random_spot(sprite, size, rng, inside=0.65)
    paste_with_shadow(canvas, sprite, at)
    box = placed_box(sprite, at, size) or Box(0, 0, size, size)
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        _passer_by(canvas, box, rng)
    lit = _uneven_light(np.asarray(canvas.convert("RGB"), np.float32) / 255.0, rng)
    return Photo(_sensor_noise(camera(Image.fromarray(to_bytes(lit), "RGB"), rng), rng), box)


def _turned(sprite: Image.Image, rng: np.random.Generator) -> Image.Image:
    """More squash, rotation and tilt than `scenes.posed`: a garment worn, held up or lying at an angle."""
    squash = rng.uniform(0.7, 1.2)
    sprite = sprite.resize((max(8, round(sprite.width * squash)), sprite.height), Image.Resampling.BILINEAR)
    sprite = sprite.rotate(float(rng.uniform(-40, 40)), Image.Resampling.BILINEAR, expand=True)
    return perspective(sprite, rng, float(rng.uniform(0.05, 0.3)))


def _place(size: int, rng: np.random.Generator) -> Image.Image:
    """A wall above a floor, meeting at a soft horizon, under a light from one side, slightly out of focus."""
    horizon = rng.uniform(0.3, 0.8) * size
    wall = _surface(size, rng, cells=(3, 3))
    floor = _surface(size, rng, cells=(3, 8))  # finer across the rows: texture recedes towards the horizon
    rows = np.arange(size, dtype=np.float32)[:, None, None]
    on_floor = np.clip((rows - horizon) / rng.uniform(1.0, 4.0) + 0.5, 0.0, 1.0)
    pixels = (wall * (1 - on_floor) + floor * on_floor) * _soft_light(size, rng)[..., None]
    canvas = Image.fromarray(to_bytes(pixels), "RGB").convert("RGBA")
    draw = ImageDraw.Draw(canvas, "RGBA")
    if rng.uniform() < 0.5:
        _tiles(draw, horizon, size, rng)
    for _ in range(int(rng.integers(0, 4))):  # windows, doors, signs, shelves
        _fixture(draw, horizon, size, rng)
    radius = float(rng.uniform(0.5, 2.5))  # depth of field: the place is behind the garment
    return canvas.filter(ImageFilter.GaussianBlur(radius))


def _surface(size: int, rng: np.random.Generator, cells: tuple[int, int]) -> np.ndarray:
    """A material: one muted colour, its brightness and hue varying as fractal noise, size x size x 3."""
    colour = np.asarray(
        colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.03, 0.4), rng.uniform(0.3, 0.9)), np.float32
    )
    shade = 1.0 + rng.uniform(0.15, 0.5) * _fractal(size, rng, cells, octaves=6)
    tint = 1.0 + rng.uniform(0.02, 0.1) * np.dstack([_fractal(size, rng, cells, octaves=2) for _ in range(3)])
    return colour * shade[..., None] * tint


def _fractal(size: int, rng: np.random.Generator, cells: tuple[int, int], octaves: int) -> np.ndarray:
    """Multi-octave value noise in [-1, 1]: random grids, each twice as fine and `persistence` as strong."""
    persistence = rng.uniform(0.45, 0.65)
    total, weight = np.zeros((size, size), np.float32), 0.0
    for octave in range(octaves):
        across, down = (c * 2**octave + 1 for c in cells)
        grid = rng.uniform(-1.0, 1.0, (down, across)).astype(np.float32)
        total += persistence**octave * np.asarray(
            Image.fromarray(grid, "F").resize((size, size), Image.Resampling.BICUBIC)
        )
        weight += persistence**octave
    return np.clip(total / weight, -1.0, 1.0)


def _soft_light(size: int, rng: np.random.Generator) -> np.ndarray:
    """A brightness gradient from one side and a broad glow where the light falls."""
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0.0, 0.5) * (ramp[None, :] * np.cos(angle) + ramp[:, None] * np.sin(angle))
    cx, cy = rng.uniform(-0.5, 0.5, 2)
    spread = rng.uniform(0.2, 0.6)
    glow = np.exp(-((ramp[None, :] - cx) ** 2 + (ramp[:, None] - cy) ** 2) / (2 * spread**2))
    return 0.8 + gradient + rng.uniform(0.0, 0.4) * glow


def _tiles(draw: ImageDraw.ImageDraw, horizon: float, size: int, rng: np.random.Generator) -> None:
    """Floor joints: rows that crowd towards the horizon and lines that meet at a vanishing point."""
    colour = _grey(rng, alpha=(40, 110))
    width = int(rng.integers(1, 3))
    depth = size - horizon
    for t in np.linspace(0.0, 1.0, int(rng.integers(5, 12)))[1:]:
        y = horizon + depth * t**2
        draw.line([(0, y), (size, y)], fill=colour, width=width)
    vanish = rng.uniform(0.2, 0.8) * size
    for x in np.linspace(-size, 2 * size, int(rng.integers(6, 16))):
        draw.line([(vanish, horizon), (x, size)], fill=colour, width=width)


def _fixture(draw: ImageDraw.ImageDraw, horizon: float, size: int, rng: np.random.Generator) -> None:
    """A window, door, sign or shelf on the wall: a rectangle with a frame."""
    w, h = rng.uniform(0.08, 0.4) * size, rng.uniform(0.05, 0.5) * size
    x0, y0 = rng.uniform(-0.1, 1.0) * size, rng.uniform(-0.1, 1.0) * max(horizon - h, 1.0)
    fill = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.6), rng.uniform(0.1, 1))
    draw.rectangle(
        [x0, y0, x0 + w, y0 + h],
        fill=_paint(fill, alpha=int(rng.integers(150, 256))),
        outline=_grey(rng, alpha=(150, 256)),
        width=int(rng.integers(1, 5)),
    )


def _grey(rng: np.random.Generator, alpha: tuple[int, int]) -> Colour:
    level = int(rng.integers(20, 90))
    return level, level, level, int(rng.integers(*alpha))


def _passer_by(canvas: Image.Image, box: Box, rng: np.random.Generator) -> None:
    """A person crossing in front of one side of the garment, often nearer the camera and out of focus."""
    bw, bh = box.right - box.left, box.bottom - box.top
    # Near or far, but never wider than the garment: the torso is 0.3 of a figure's height.
    height = rng.uniform(0.7, 1.6) * min(bh, 2.0 * bw)
    # Centred near a side of the garment, so that most of it stays in view.
    side = rng.uniform(-0.2, 0.15) if rng.uniform() < 0.5 else rng.uniform(0.85, 1.2)
    cx = box.left + side * bw
    top = box.top + rng.uniform(0.3, 0.7) * bh - 0.36 * height  # the torso's middle within the garment
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    _figure(ImageDraw.Draw(layer), cx, top, height, rng)
    radius = float(rng.uniform(0.0, 2.5))
    canvas.alpha_composite(layer.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.3 else layer)


def _figure(draw: ImageDraw.ImageDraw, cx: float, top: float, height: float, rng: np.random.Generator) -> None:
    """Legs, torso, arms and head as polygons and ellipses, `height` pixels tall from `top`."""

    def at(x: float, y: float) -> tuple[float, float]:
        return cx + x * height, top + y * height

    skin = _paint(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))])
    shirt, trousers = _clothing(rng), _clothing(rng)
    sleeves = shirt if rng.uniform() < 0.6 else skin
    stride = rng.uniform(0.03, 0.15)  # how far apart the feet are: standing or walking
    for side in (-1, 1):
        hip, foot = side * LEG_WIDTH / 2, side * stride
        draw.polygon(
            [
                at(hip - LEG_WIDTH / 2, HIP_Y),
                at(hip + LEG_WIDTH / 2, HIP_Y),
                at(foot + 0.03, 1.0),
                at(foot - 0.03, 1.0),
            ],
            fill=trousers,
        )
    draw.polygon([at(x, y) for x, y in TORSO], fill=shirt)
    for side in (-1, 1):
        swing = np.radians(rng.uniform(-35, 35) + side * 8)  # arms hang and swing, slightly away from the body
        hand = (side * SHOULDER_X + ARM_LENGTH * np.sin(swing) * side, SHOULDER_Y + ARM_LENGTH * np.cos(swing))
        _limb(draw, at(side * SHOULDER_X, SHOULDER_Y), at(*hand), ARM_WIDTH * height, sleeves)
        hx, hy = at(*hand)
        r = 0.035 * height
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=skin)
    hx, hy = at(HEAD[0], HEAD[1])
    draw.ellipse(
        [hx - HEAD[2] * height, hy - HEAD[3] * height, hx + HEAD[2] * height, hy + HEAD[3] * height], fill=skin
    )


def _limb(
    draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float], width: float, fill: Colour
) -> None:
    """A straight limb of `width` pixels from `start` to `end`, as a quadrilateral."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = max(float(np.hypot(dx, dy)), 1e-6)
    nx, ny = -dy / length * width / 2, dx / length * width / 2
    draw.polygon(
        [
            (start[0] + nx, start[1] + ny),
            (end[0] + nx, end[1] + ny),
            (end[0] - nx, end[1] - ny),
            (start[0] - nx, start[1] - ny),
        ],
        fill=fill,
    )


def _clothing(rng: np.random.Generator) -> Colour:
    return _paint(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.8), rng.uniform(0.1, 0.9)))


def _paint(rgb: tuple[float, float, float], alpha: int = 255) -> Colour:
    """An RGBA fill from an RGB colour in [0, 1]."""
    return int(rgb[0] * 255), int(rgb[1] * 255), int(rgb[2] * 255), alpha


def _uneven_light(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged shadow band across the photo, a vignette, both or neither."""
    size = pixels.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    light = np.ones((size, size), np.float32)
    if rng.uniform() < 0.5:  # the shadow of a pole, an awning or a building edge
        angle = rng.uniform(0, np.pi)
        across = ramp[None, :] * np.cos(angle) + ramp[:, None] * np.sin(angle) - rng.uniform(-0.4, 0.4)
        half, soft = rng.uniform(0.08, 0.25), rng.uniform(0.01, 0.08)
        inside = np.clip((half - np.abs(across)) / soft + 0.5, 0.0, 1.0)
        light *= 1.0 - rng.uniform(0.3, 0.65) * inside
    if rng.uniform() < 0.6:  # a phone lens darkens the corners
        light *= 1.0 - rng.uniform(0.2, 0.6) * (ramp[None, :] ** 2 + ramp[:, None] ** 2) * 2
    return pixels * light[..., None]


def _sensor_noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Shot noise that grows with brightness, and blotchy colour noise from a small sensor in poor light."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    size = pixels.shape[0]
    shot = rng.uniform(0.01, 0.06) * np.sqrt(pixels) * rng.standard_normal(pixels.shape).astype(np.float32)
    coarse = rng.standard_normal((max(2, size // 4), max(2, size // 4), 3)).astype(np.float32)
    blotches = np.dstack(
        [
            np.asarray(Image.fromarray(coarse[..., c], "F").resize((size, size), Image.Resampling.BILINEAR))
            for c in range(3)
        ]
    )
    return Image.fromarray(to_bytes(pixels + shot + rng.uniform(0.0, 0.03) * blotches), "RGB")
