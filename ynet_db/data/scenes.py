"""Photos of drawn garments in the two domains of the generated benchmark.

Shop photos are clean but show the product *beside* one or two other garments of similar size, so
average pooling mixes them and only the tags say which one is for sale. Street photos show the
product alone but badly: cluttered background (with pattern-like textures and other clothes), pose
(rotation, perspective, drape), scale, lighting and colour cast, blur, occlusion, noise. This is the
classic street style; `hard_street.py` builds the hard one from the same parts (posing, pasting, camera).
Each function takes its own numpy Generator: a photo is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ynet_db.data.garments import Garment, render_garment
from ynet_db.data.records import Box

# Layouts of the shop photo: (centre x, centre y, cell side) as fractions of the photo side.
SHOP_LAYOUTS: dict[int, tuple[tuple[tuple[float, float, float], ...], ...]] = {
    2: (
        ((0.27, 0.5, 0.54), (0.73, 0.5, 0.54)),
        ((0.5, 0.27, 0.54), (0.5, 0.73, 0.54)),
        ((0.3, 0.3, 0.58), (0.7, 0.7, 0.58)),
    ),
    3: (
        ((0.18, 0.5, 0.38), (0.5, 0.5, 0.38), (0.82, 0.5, 0.38)),
        ((0.27, 0.27, 0.52), (0.73, 0.27, 0.52), (0.5, 0.74, 0.52)),
        ((0.5, 0.26, 0.52), (0.27, 0.73, 0.52), (0.73, 0.73, 0.52)),
    ),
}
SKIN_TONES = ((0.96, 0.8, 0.69), (0.87, 0.67, 0.53), (0.65, 0.45, 0.32), (0.42, 0.28, 0.2))


@dataclass(frozen=True)
class Photo:
    image: Image.Image
    box: Box
    """Where the product is, as the release's bounding-box file records it."""


def shop_photo(product: Garment, others: list[Garment], size: int, rng: np.random.Generator) -> Photo:
    """The product beside `others` on a plain studio background."""
    layouts = SHOP_LAYOUTS[1 + len(others)]
    cells = list(layouts[int(rng.integers(len(layouts)))])
    order = rng.permutation(len(cells))  # where the product sits, and who overlaps whom
    canvas = _studio_background(size, rng)
    box = Box(0, 0, size, size)
    for index in order:
        garment = product if index == 0 else others[index - 1]
        cx, cy, side = cells[index]
        sprite = render_garment(garment, max(8, round(side * size * rng.uniform(0.92, 1.05))))
        at = (
            round(cx * size - sprite.width / 2 + rng.normal(0, 0.02) * size),
            round(cy * size - sprite.height / 2 + rng.normal(0, 0.02) * size),
        )
        paste_with_shadow(canvas, sprite, at)
        if index == 0:
            box = placed_box(sprite, at, size) or box
    return Photo(canvas.convert("RGB"), box)


def _studio_background(size: int, rng: np.random.Generator) -> Image.Image:
    top = rng.uniform(0.9, 1.0, 3).astype(np.float32) * rng.uniform(0.94, 1.0)
    bottom = top * rng.uniform(0.9, 1.0)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, size, 1), np.float32)
    return Image.fromarray(to_bytes(pixels), "RGB").convert("RGBA")


def paste_with_shadow(canvas: Image.Image, sprite: Image.Image, at: tuple[int, int]) -> None:
    source = _clip_source(canvas, sprite, at)
    if source[2] <= source[0] or source[3] <= source[1]:
        return  # entirely outside the photo
    shadow = Image.new("RGBA", sprite.size, (0, 0, 0, 0))
    shadow.putalpha(sprite.getchannel("A").point(lambda a: a * 35 // 100).filter(ImageFilter.GaussianBlur(3)))
    shadow_at = (at[0] + 3, at[1] + 4)
    shadow_source = _clip_source(canvas, shadow, shadow_at)
    if shadow_source[2] > shadow_source[0] and shadow_source[3] > shadow_source[1]:
        canvas.alpha_composite(shadow, _clip_dest(shadow_at), shadow_source)
    canvas.alpha_composite(sprite, _clip_dest(at), source)


def _clip_dest(at: tuple[int, int]) -> tuple[int, int]:
    return max(at[0], 0), max(at[1], 0)


def _clip_source(canvas: Image.Image, sprite: Image.Image, at: tuple[int, int]) -> tuple[int, int, int, int]:
    """The part of the sprite that lands on the canvas (alpha_composite refuses negative offsets)."""
    left, top = max(-at[0], 0), max(-at[1], 0)
    right = min(sprite.width, canvas.width - at[0])
    bottom = min(sprite.height, canvas.height - at[1])
    return left, top, max(right, left), max(bottom, top)


def placed_box(sprite: Image.Image, at: tuple[int, int], size: int) -> Box | None:
    bounds = sprite.getchannel("A").point(lambda a: 255 if a > 64 else 0).getbbox()
    if bounds is None:
        return None
    left, top = max(bounds[0] + at[0], 0), max(bounds[1] + at[1], 0)
    right, bottom = min(bounds[2] + at[0], size), min(bounds[3] + at[1], size)
    return Box(left, top, right, bottom) if right > left and bottom > top else None


def street_photo(product: Garment, companions: list[Garment], size: int, rng: np.random.Generator) -> Photo:
    """The product as a shopper's phone sees it: posed, small or large, in clutter and bad light."""
    canvas = _clutter(size, rng)
    for companion in companions:  # other clothes in view, e.g. what the wearer has on too
        sprite = posed(render_garment(companion, round(size * rng.uniform(0.4, 0.8))), rng, size)
        paste_with_shadow(canvas, sprite, random_spot(sprite, size, rng, inside=0.5))
    sprite = posed(render_garment(product, round(size * rng.uniform(0.5, 0.95))), rng, size)
    sprite = draped(sprite, rng)
    at = random_spot(sprite, size, rng, inside=0.85)
    paste_with_shadow(canvas, sprite, at)
    box = placed_box(sprite, at, size) or Box(0, 0, size, size)
    _occlude(canvas, box, rng)
    return Photo(camera(canvas.convert("RGB"), rng), box)


def _clutter(size: int, rng: np.random.Generator) -> Image.Image:
    """A busy background: a gradient, shapes, stripes and dots that look like fabric patterns."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    a, b = rng.uniform(0.1, 0.9, 3).astype(np.float32), rng.uniform(0.1, 0.9, 3).astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = np.clip(ramp[None, :] * np.cos(angle) + ramp[:, None] * np.sin(angle), 0, 1)[..., None]
    canvas = Image.fromarray(to_bytes(a * (1 - t) + b * t), "RGB").convert("RGBA")
    draw = ImageDraw.Draw(canvas, "RGBA")
    for _ in range(int(rng.integers(10, 28))):
        _random_shape(draw, size, rng)
    radius = float(rng.uniform(0.0, 2.5))  # depth of field
    return canvas.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.3 else canvas


def _random_shape(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator) -> None:
    colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (int(rng.integers(120, 256)),)
    x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
    w, h = rng.uniform(0.05, 0.5, 2) * size
    kind = int(rng.integers(0, 5))
    if kind == 0:
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
    elif kind == 1:
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
    elif kind == 2:
        draw.polygon(
            [tuple(p) for p in (rng.uniform(-0.1, 1.1, (int(rng.integers(3, 6)), 2)) * size).tolist()], fill=colour
        )
    elif kind == 3:
        draw.line([x0, y0, x0 + w * rng.choice([-1, 1]), y0 + h], fill=colour, width=int(rng.integers(1, 8)))
    else:  # a patch of stripes, the cheapest fabric look-alike
        step = float(rng.uniform(3, 10))
        for offset in np.arange(0.0, w, step * 2):
            draw.rectangle([x0 + offset, y0, x0 + offset + step, y0 + h], fill=colour)


def posed(sprite: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """Squash, rotate and tilt the flat garment as a body and a camera would."""
    squash = rng.uniform(0.8, 1.12)
    sprite = sprite.resize((max(8, round(sprite.width * squash)), sprite.height), Image.Resampling.BILINEAR)
    sprite = sprite.rotate(float(rng.uniform(-22, 22)), Image.Resampling.BILINEAR, expand=True)
    return perspective(sprite, rng, float(rng.uniform(0.0, 0.15)))


def perspective(sprite: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    w, h = sprite.size
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float64)
    moved = corners + rng.uniform(-strength, strength, (4, 2)) * (w, h)
    moved -= moved.min(axis=0)
    out = (max(8, int(np.ceil(moved[:, 0].max()))), max(8, int(np.ceil(moved[:, 1].max()))))
    return sprite.transform(out, Image.Transform.PERSPECTIVE, _homography(moved, corners), Image.Resampling.BILINEAR)


def _homography(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """Coefficients that map output (dst) points back to input (src) points, as Pillow expects."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.array(rows), src.reshape(-1)).tolist())


def draped(sprite: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Folds: columns shift in a wave and light falls off across them."""
    pixels = np.asarray(sprite, dtype=np.float32)
    h, w = pixels.shape[:2]
    period, amplitude = rng.uniform(0.5, 1.5) * h, rng.uniform(0.0, 0.04) * w
    shifts = np.rint(amplitude * np.sin(2 * np.pi * np.arange(h) / period + rng.uniform(0, 2 * np.pi))).astype(int)
    columns = np.clip(np.arange(w)[None, :] - shifts[:, None], 0, w - 1)
    pixels = pixels[np.arange(h)[:, None], columns]
    folds = 1.0 - rng.uniform(0.0, 0.25) * (
        0.5 + 0.5 * np.sin(2 * np.pi * np.arange(w) / (rng.uniform(0.15, 0.4) * w) + rng.uniform(0, 6.3))
    )
    pixels[..., :3] *= folds[None, :, None]
    return Image.fromarray(to_bytes(pixels / 255.0), "RGBA")


def random_spot(sprite: Image.Image, size: int, rng: np.random.Generator, inside: float) -> tuple[int, int]:
    """A paste position keeping at least `inside` of the sprite's width and height in the photo."""
    margin_x, margin_y = (1 - inside) * sprite.width, (1 - inside) * sprite.height
    x = rng.uniform(-margin_x, max(size - sprite.width + margin_x, -margin_x + 1))
    y = rng.uniform(-margin_y, max(size - sprite.height + margin_y, -margin_y + 1))
    return round(x), round(y)


def _occlude(canvas: Image.Image, box: Box, rng: np.random.Generator) -> None:
    """A hand, a bag strap or a pole in front of the product."""
    draw = ImageDraw.Draw(canvas, "RGBA")
    bw, bh = box.right - box.left, box.bottom - box.top
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        cx, cy = box.left + rng.uniform(0, 1) * bw, box.top + rng.uniform(0, 1) * bh
        kind = int(rng.integers(0, 3))
        if kind == 0:
            tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
            r = rng.uniform(0.1, 0.2) * max(bw, bh)
            draw.ellipse([cx - r, cy - r * 0.7, cx + r, cy + r * 0.7], fill=tuple(int(c * 255) for c in tone) + (255,))
        elif kind == 1:
            w, h = rng.uniform(0.15, 0.35) * bw, rng.uniform(0.15, 0.35) * bh
            draw.rectangle(
                [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                fill=tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,),
            )
        else:
            width = rng.uniform(0.04, 0.1) * bw
            draw.rectangle(
                [cx - width / 2, 0, cx + width / 2, canvas.height],
                fill=tuple(int(c) for c in rng.integers(20, 120, 3)) + (255,),
            )


def camera(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Light, colour cast, blur and sensor noise of a phone camera."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    warmth = rng.uniform(-0.18, 0.18)
    gains = np.array([1 + warmth, 1.0, 1 - warmth], np.float32) * rng.uniform(0.6, 1.25)
    size = pixels.shape[0]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    light = 1.0 + rng.uniform(0.0, 0.5) * (ramp[None, :] * np.cos(angle) + ramp[:, None] * np.sin(angle))
    pixels = pixels * gains * light[..., None]
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.7, 1.15) + mean
    pixels = np.clip(pixels, 0, 1) ** rng.uniform(0.8, 1.25)
    pixels = pixels + rng.normal(0.0, rng.uniform(0.005, 0.035), pixels.shape).astype(np.float32)
    image = Image.fromarray(to_bytes(pixels), "RGB")
    radius = float(rng.uniform(0.0, 1.4))
    if rng.uniform() < 0.2:  # hand shake
        return image.filter(ImageFilter.BoxBlur(float(rng.uniform(1.0, 2.0))))
    return image.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.3 else image


def to_bytes(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
