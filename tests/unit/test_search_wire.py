"""A query image travels to a search worker as the pixels an in-process search would see."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ynet_db.images.decode import ImageError
from ynet_db.images.policy import FetchPolicy, FetchRefused
from ynet_db.search.query import SearchQuery, as_image
from ynet_db.search.query_image import carried


def random_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def travelled(image: bytes | Image.Image) -> bytes | Image.Image:
    return SearchQuery.from_wire(SearchQuery(image).to_wire()).image


def test_a_photo_arrives_with_the_same_pixels() -> None:
    photo = random_image(224, 224)
    assert as_image(travelled(photo)).tobytes() == photo.tobytes()


def test_a_transparent_picture_arrives_as_the_in_process_search_sees_it() -> None:
    picture = random_image(64, 48, "RGBA")
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG")
    seen_in_process = as_image(picture)
    assert seen_in_process.tobytes() == as_image(encoded.getvalue()).tobytes(), "on white, as a decoded file"
    assert as_image(travelled(picture)).tobytes() == seen_in_process.tobytes()


def test_an_upload_travels_as_it_came() -> None:
    upload = b"\xff\xd8 not decoded on the way"
    assert travelled(upload) == upload


def test_a_malformed_image_message_is_refused_with_what_is_wrong() -> None:
    wire = {**SearchQuery(b"x").to_wire(), "image": "not base64!"}
    with pytest.raises(ValueError, match="the query image in the message is not valid base64"):
        SearchQuery.from_wire(wire)


def test_a_query_carries_bytes_or_a_picture_and_fetches_a_path_under_the_policy(tmp_path: Path) -> None:
    picture = random_image(16, 16)
    assert carried(b"upload") == b"upload" and carried(picture) is picture
    (tmp_path / "photo.png").write_bytes(b"on disk")
    assert carried(tmp_path / "photo.png", FetchPolicy(roots=(tmp_path,))) == b"on disk"
    with pytest.raises(FetchRefused, match="photo.png"):
        carried(str(tmp_path / "photo.png"), FetchPolicy(roots=(tmp_path / "elsewhere",)))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: carried(5), "image query: must be bytes, a path or URL, or a PIL image, not int"),  # type: ignore[arg-type]
        (lambda: SearchQuery("photo.jpg"), "image query: must be bytes or a PIL image, not str"),  # type: ignore[arg-type]
        (lambda: as_image(b"not an image"), "image query: is not an image in a supported format"),
    ],
)
def test_what_a_query_cannot_carry_is_refused_naming_the_image(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ImageError) as raised:
        make()
    assert str(raised.value).startswith(message)
