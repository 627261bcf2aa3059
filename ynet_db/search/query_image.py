"""A query's image, from what a caller may pass to what the model sees, in three named steps.

    what a caller may pass (`ImageInput`): bytes, a path or URL, or a PIL image
      -> `carried`  what a query carries (`QueryImage`): the upload's bytes, or the caller's own picture;
                    a path or URL is fetched here, under the fetch policy, and nowhere else
      -> `as_image` what the model sees: decoded under the image limits (bytes) or made RGB (a picture)
    and, for a worker, `image_bytes`: what travels on the wire (bytes as they came; a picture as lossless PNG).

No torch here: a client that only sends queries to workers imports this.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ynet_db.images.decode import ImageError, decode_image, to_rgb
from ynet_db.images.fetch import fetch_image_bytes
from ynet_db.images.policy import FetchPolicy

QueryImage = bytes | Image.Image
"""What a query carries: the upload's bytes (decoded where the model runs), or a decoded picture."""
ImageInput = bytes | str | Path | Image.Image
"""What a caller may pass: also a path or URL, read under the fetch policy."""

SOURCE = "query"
"""How errors name a query image that has no location."""


def carried(image: ImageInput, policy: FetchPolicy | None = None) -> QueryImage:
    """The query's bytes or picture; a path or URL is fetched under `policy` (default: from the environment)."""
    if isinstance(image, bytes | Image.Image):
        return image
    if isinstance(image, str | Path):
        return fetch_image_bytes(str(image), policy=policy or FetchPolicy.from_env())
    raise ImageError(SOURCE, f"must be bytes, a path or URL, or a PIL image, not {type(image).__name__}")


def as_image(image: QueryImage) -> Image.Image:
    """The RGB picture the model preprocesses: bytes decoded under the image limits."""
    if isinstance(image, Image.Image):
        return to_rgb(image, SOURCE)
    return decode_image(image, source=SOURCE)


def image_bytes(image: QueryImage) -> bytes:
    """The image as it travels to a worker."""
    if isinstance(image, bytes):
        return image
    # Lossless, so a worker sees the same pixels; the fastest zlib level, because the default spends
    # 10 ms on a 224x224 photo to save a few KB on a local network. (Raw RGB packs 5 ms faster still,
    # but in an A/B run it did not shorten the worker path beyond the noise, so the wire stays PNG.)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
