"""Photometric and geometric augmentation of street images, in Pillow (torchvision is unavailable).

method.md: without augmentation both stages over-fit quickly. The trunk is frozen and its outputs
are cached, so augmentation happens before caching: each street image is cached as several views.
"""

from __future__ import annotations

import random

from PIL import Image, ImageEnhance, ImageOps


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
