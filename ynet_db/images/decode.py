"""Safely decode images: bytes in, an RGB Pillow image or a named `ImageError` out.

Images are untrusted input (docs/design.md#7-inputs-are-untrusted). Every failure a caller can meet (missing file,
too many bytes, decompression bomb, truncated or corrupt data, an image too small to embed, a crop
box outside the image) becomes an `ImageError` that names the image, so a batch records one failed
item and carries on. Reading files and fetching URLs is `fetch.py`'s (`dataset.py` reads a dataset's
images through it). No torch here: the core imports without it.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ynet_db.data.records import Box

log = logging.getLogger(__name__)

# Raster formats shops and phones produce (JPEG covers MPO, the multi-picture JPEG of phones).
# Everything else (EPS runs Ghostscript, PSD, ICNS, ...) is refused before its plugin parses a byte.
SAFE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class ImageError(ValueError):
    """An image that cannot be used; `source` names it, `reason` says why."""

    def __init__(self, source: str, reason: str, hint: str = "") -> None:
        self.source = source
        self.reason = reason
        self.hint = hint
        super().__init__(f"image {source}: {reason}" + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    """Checked against the header's width x height before any pixel is decoded."""
    min_side: int = 8
    formats: tuple[str, ...] = SAFE_FORMATS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.min_side < 1:
            raise ValueError(f"image limits must be positive: {self}")


DEFAULT_LIMITS = ImageLimits()


def decode_image(data: bytes, *, source: str, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode `data` into a fully loaded RGB image, upright per its EXIF orientation."""
    if not data:
        raise ImageError(source, "is empty (0 bytes)", "re-upload or re-download it")
    if len(data) > limits.max_bytes:
        raise ImageError(source, f"has {len(data)} bytes, over the limit of {limits.max_bytes}")
    image = _open_checked(data, source, limits)
    if min(image.size) < limits.min_side:
        raise ImageError(source, f"is {image.width}x{image.height} pixels, smaller than {limits.min_side} on a side")
    return to_rgb(_upright(image, source), source)


def _open_checked(data: bytes, source: str, limits: ImageLimits) -> Image.Image:
    """Open, check the header's pixel count, then decode everything (so truncation surfaces here)."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except Image.DecompressionBombError as exc:
        raise ImageError(source, f"is a decompression bomb ({exc})") from exc
    except Exception as exc:  # Pillow's plugins raise many types on hostile headers
        raise ImageError(source, "is not an image in a supported format", _formats_hint(limits)) from exc
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageError(
            source,
            f"is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}",
            "a decompression bomb, or a photo to downscale before upload",
        )
    try:
        image.load()
    except Exception as exc:  # truncated files raise OSError, corrupt ones SyntaxError/ValueError/...
        raise ImageError(source, f"cannot be decoded ({exc})", "the file is truncated or corrupt") from exc
    return image


def _formats_hint(limits: ImageLimits) -> str:
    return "accepted formats: " + ", ".join(limits.formats)


def _upright(image: Image.Image, source: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block should not cost a usable picture
        log.warning("image %s: EXIF orientation ignored (%s)", source, exc)
        return image


def to_rgb(image: Image.Image, source: str) -> Image.Image:
    """8-bit RGB, transparent pixels on white, high-depth greyscale scaled (not clipped)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        return _composite_on_white(image.convert("RGBA"))
    try:
        return image.convert("RGB")  # CMYK, YCbCr, L, 1, P: Pillow's own conversions are correct
    except ValueError as exc:
        raise ImageError(source, f"has pixel mode {image.mode}, which cannot be converted to RGB") from exc


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit and float greyscale to 8 bits; Pillow's own convert clips everything over 255 to white."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        top = 1.0 if values.size and float(values.max()) <= 1.0 else 255.0
    elif image.mode == "I" and values.size and float(values.max()) <= 255.0:
        top = 255.0  # 'I' holds 8-bit data too (e.g. after some TIFF decoders)
    else:
        top = 65535.0
    grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def crop_to_box(image: Image.Image, box: Box, *, source: str, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    left, top = max(box.left, 0), max(box.top, 0)
    right, bottom = min(box.right, image.width), min(box.bottom, image.height)
    if right <= left or bottom <= top:
        raise ImageError(
            source,
            f"box ({box.left}, {box.top}, {box.right}, {box.bottom}) "
            f"lies outside the {image.width}x{image.height} image",
            "check the release's bounding-box file",
        )
    if min(right - left, bottom - top) < limits.min_side:
        raise ImageError(
            source, f"box crop is {right - left}x{bottom - top} pixels, smaller than {limits.min_side} on a side"
        )
    return image.crop((left, top, right, bottom))
