"""Photometric and geometric augmentation of street images, in Pillow (torchvision is unavailable).

Without augmentation both stages over-fit quickly (docs/method.md#augment-or-both-stages-over-fit).
The trunk is frozen and its outputs are cached, so augmentation happens before caching: each street
image is cached as several views.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps


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
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(view).enhance(rng.uniform(0.7, 1.3))


def street_view(image: Image.Image, others: Sequence[Image.Image], rng: random.Random) -> Image.Image:
    """A street-like photo made from a catalogue photo alone (issue 9 item 5).

    The photo is cropped, tilted in perspective and shrunk onto a background cut from another
    catalogue photo, partly hidden by an occluder cut from a third, then re-lit, blurred and
    JPEG-compressed: what a phone adds to a garment, with the garment's own pixels unchanged in kind.
    """
    size = image.size
    view = perspective(augmented_view(image, rng), rng)
    scale = rng.uniform(0.55, 0.95)
    garment = view.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))))
    canvas = background(others, size, rng) if others else Image.new("RGB", size, (128, 128, 128))
    canvas.paste(garment, (rng.randint(0, size[0] - garment.width), rng.randint(0, size[1] - garment.height)))
    if others and rng.random() < 0.7:
        occlude(canvas, rng.choice(others), rng)
    canvas = ImageEnhance.Color(canvas).enhance(rng.uniform(0.6, 1.4))
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.6, 1.3))
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    return jpeg(canvas, rng.randint(30, 85))


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
    sw, sh = source.size
    left, top = rng.randint(0, max(0, sw - pw)), rng.randint(0, max(0, sh - ph))
    patch = source.convert("RGB").crop((left, top, left + pw, top + ph))
    mask = Image.new("L", patch.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, patch.width - 1, patch.height - 1), fill=255)
    canvas.paste(patch, (rng.randint(0, w - patch.width), rng.randint(0, h - patch.height)), mask)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
