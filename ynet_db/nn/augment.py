"""Photometric and geometric augmentation of street images, in Pillow (torchvision is unavailable).

Without augmentation both stages over-fit quickly (docs/method.md#augment-or-both-stages-over-fit).
The trunk is frozen and its outputs are cached, so augmentation happens before caching: each street
image is cached as several views.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from ynet_db.nn.garment_cut import cutout


def augmented_view(image: Image.Image, rng: random.Random) -> Image.Image:
    """A random crop (60-100% of the area, aspect 3:4..4:3), a coin-flip mirror, brightness/contrast jitter."""
    width, height = image.size
    area = rng.uniform(0.6, 1.0) * width * height
    aspect = rng.uniform(0.75, 1.333)
    crop_w = min(width, max(1, round((area * aspect) ** 0.5)))
    crop_h = min(height, max(1, round((area / aspect) ** 0.5)))
    left = rng.randint(0, width - crop_w)
    top = rng.randint(0, height - crop_h)
    view = image.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    alpha = view.getchannel("A") if view.mode == "RGBA" else None
    view = ImageEnhance.Brightness(view.convert("RGB")).enhance(rng.uniform(0.7, 1.3))
    view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.7, 1.3))
    if alpha is not None:  # the jitter is the garment's light; its outline stays as it was
        view.putalpha(alpha)
    return view


STREET_VIEW_RECIPES = ("v2", "v3")
"""How street views are made; a view cache is kept per recipe, since its key sees only the photos.
v2: the garment on a corner of another catalogue photo. v3 (the default): v2 on a cluttered backdrop,
with folds in the garment and a phone camera's colour cast, uneven light and sensor noise."""
STREET_VIEWS = "v3"


def street_view(
    image: Image.Image,
    others: Sequence[Image.Image],
    rng: random.Random,
    cut_out: bool = True,
    recipe: str = STREET_VIEWS,
) -> Image.Image:
    """A street-like photo made from a catalogue photo alone (issue 9 item 5).

    The garment is cut out of its plain backdrop (`cut_out`, where it has one; else the rectangle),
    cropped, tilted in perspective, turned and shrunk onto a busy background (a corner of another
    catalogue photo with other garments cut from others in front of it, as passers-by are), partly
    hidden by an occluder cut from a third, then re-lit, blurred and JPEG-compressed: what a phone
    adds to a garment, with the garment's own pixels unchanged in kind. Recipe v3 also clutters the
    backdrop with pieces of other garments, folds the garment and adds what a phone's sensor does:
    a shopper's photo is taken among things, of cloth on a body, by a small camera, and studio
    photos show none of that.
    """
    check_recipe(recipe)
    richer = recipe != "v2"
    size = image.size
    garment = perspective(augmented_view(cutout(image) if cut_out else image.convert("RGBA"), rng), rng)
    if richer:
        garment = folds(garment, rng)
    garment = garment.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR, expand=True)
    canvas = background(others, size, rng) if others else Image.new("RGB", size, (128, 128, 128))
    # v3 strews pieces of the other garments, not of their studio backdrops, which would be blank patches
    pieces = [cutout(other).convert("RGB") for other in others] if richer else list(others)
    if richer and others:
        clutter(canvas, pieces, rng)
    for other in rng.sample(list(others), k=min(len(others), rng.randint(0, 2))):
        paste(canvas, cutout(other), rng.uniform(0.3, 0.7), rng)
    paste(canvas, garment, rng.uniform(0.55, 0.95), rng)
    if others and rng.random() < 0.7:
        occlude(canvas, rng.choice(pieces), rng)
    canvas = ImageEnhance.Color(canvas).enhance(rng.uniform(0.6, 1.4))
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.6, 1.3))
    if richer:
        canvas = sensor(canvas, rng)
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    return jpeg(canvas, rng.randint(30, 85))


def check_recipe(recipe: str) -> None:
    if recipe not in STREET_VIEW_RECIPES:
        raise ValueError(f"unknown street-view recipe {recipe!r}; choose one of {', '.join(STREET_VIEW_RECIPES)}")


def clutter(canvas: Image.Image, pieces: Sequence[Image.Image], rng: random.Random) -> None:
    """Patches of other garments (rectangles and ellipses, 5-40% of a side) strewn over the backdrop,
    then softened as a phone's depth of field would: a street or a room, not a studio."""
    w, h = canvas.size
    for _ in range(rng.randint(4, 12)):
        source = rng.choice(pieces)
        pw, ph = max(1, round(w * rng.uniform(0.05, 0.4))), max(1, round(h * rng.uniform(0.05, 0.4)))
        patch = random_crop(source, pw, ph, rng).rotate(rng.uniform(0, 360))
        mask = Image.new("L", patch.size, 0)
        shape = ImageDraw.Draw(mask).ellipse if rng.random() < 0.5 else ImageDraw.Draw(mask).rectangle
        shape((0, 0, patch.width - 1, patch.height - 1), fill=255)
        canvas.paste(patch, (rng.randint(-pw // 2, w - pw // 2), rng.randint(-ph // 2, h - ph // 2)), mask)
    canvas.paste(canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 2.0))))


def folds(garment: Image.Image, rng: random.Random) -> Image.Image:
    """Cloth on a body: rows shift sideways in a slow wave, and light falls off across vertical folds."""
    pixels = np.asarray(garment.convert("RGBA"), dtype=np.float32)
    h, w = pixels.shape[:2]
    period, amplitude = rng.uniform(0.5, 1.5) * h, rng.uniform(0.0, 0.05) * w
    rows = np.arange(h)
    shifts = np.rint(amplitude * np.sin(2 * np.pi * rows / period + rng.uniform(0, 2 * np.pi))).astype(int)
    columns = np.clip(np.arange(w)[None, :] - shifts[:, None], 0, w - 1)
    pixels = pixels[rows[:, None], columns]
    wave = np.sin(2 * np.pi * np.arange(w) / (rng.uniform(0.15, 0.5) * w) + rng.uniform(0, 2 * np.pi))
    pixels[..., :3] *= (1.0 - rng.uniform(0.0, 0.3) * (0.5 + 0.5 * wave))[None, :, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGBA")


def sensor(image: Image.Image, rng: random.Random) -> Image.Image:
    """A phone camera's white balance (a warm or cold cast), light falling off across the frame, and noise."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    warmth = rng.uniform(-0.15, 0.15)
    h, w = pixels.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    across = np.linspace(-0.5, 0.5, w)[None, :] * np.cos(angle) + np.linspace(-0.5, 0.5, h)[:, None] * np.sin(angle)
    light = 1.0 + rng.uniform(0.0, 0.5) * across
    pixels = pixels * np.array([1 + warmth, 1.0, 1 - warmth], np.float32) * light[..., None]
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, rng.uniform(0.0, 0.03), pixels.shape)
    return Image.fromarray(np.clip(np.rint((pixels + noise) * 255.0), 0, 255).astype(np.uint8), "RGB")


def paste(canvas: Image.Image, piece: Image.Image, scale: float, rng: random.Random) -> None:
    """`piece` (RGBA) resized to `scale` of the canvas's sides, pasted at a random place through its alpha."""
    width, height = max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))
    piece = piece.resize((width, height), Image.Resampling.BILINEAR)
    canvas.paste(piece, (rng.randint(0, canvas.width - width), rng.randint(0, canvas.height - height)), piece)


def perspective(image: Image.Image, rng: random.Random, strength: float = 0.15) -> Image.Image:
    """The image as seen from a tilted camera: each corner moved inward by up to `strength` of the side."""
    w, h = image.size
    corners = [(0, 0), (0, h), (w, h), (w, 0)]  # the order QUAD reads: upper left, then anticlockwise
    moved = [
        (
            x + (1 if x == 0 else -1) * rng.uniform(0, strength) * w,
            y + (1 if y == 0 else -1) * rng.uniform(0, strength) * h,
        )
        for x, y in corners
    ]
    return image.transform(
        image.size, Image.Transform.QUAD, [c for point in moved for c in point], Image.Resampling.BILINEAR
    )


def background(others: Sequence[Image.Image], size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A corner of another catalogue photo, blown up to `size`: a busy, photo-like backdrop."""
    source = rng.choice(others).convert("RGB")
    w, h = source.size
    cw, ch = max(1, round(w * rng.uniform(0.3, 0.6))), max(1, round(h * rng.uniform(0.3, 0.6)))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return source.crop((left, top, left + cw, top + ch)).resize(size)


def occlude(canvas: Image.Image, source: Image.Image, rng: random.Random) -> None:
    """Paste an elliptical patch of `source` (an arm, a bag, a passer-by) over up to a quarter of the canvas."""
    w, h = canvas.size
    pw, ph = max(1, round(w * rng.uniform(0.15, 0.45))), max(1, round(h * rng.uniform(0.15, 0.5)))
    patch = random_crop(source.convert("RGB"), pw, ph, rng)
    mask = Image.new("L", patch.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, patch.width - 1, patch.height - 1), fill=255)
    canvas.paste(patch, (rng.randint(0, w - patch.width), rng.randint(0, h - patch.height)), mask)


def random_crop(source: Image.Image, width: int, height: int, rng: random.Random) -> Image.Image:
    """A `width` x `height` piece of `source` at a random place (cut short where `source` is smaller)."""
    left, top = rng.randint(0, max(0, source.width - width)), rng.randint(0, max(0, source.height - height))
    return source.crop((left, top, left + width, top + height))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
