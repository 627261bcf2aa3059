"""A dataset's images (training, evaluation, the demo's street photos): read, decoded, cropped to their box.

They are the operator's own files, named by a dataset the operator chose, so they are read wherever they
lie, but through the one file reader (`fetch.read_own_file`): only regular files, at most the byte limit,
and a FIFO or device in a dataset folder is refused instead of blocking the reader.
"""

from __future__ import annotations

from PIL import Image

from ynet_db.data.records import ImageRef
from ynet_db.images.decode import DEFAULT_LIMITS, ImageLimits, crop_to_box, decode_image
from ynet_db.images.fetch import read_own_file


def read_image(ref: ImageRef, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Read, decode and crop one dataset image to its box (clamped to the image)."""
    source = str(ref.path)
    image = decode_image(read_own_file(ref.path, limits), source=source, limits=limits)
    return image if ref.box is None else crop_to_box(image, ref.box, source=source, limits=limits)
