from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ynet_db.config import Settings
from ynet_db.data.records import Box, ImageRef
from ynet_db.images.dataset import read_image
from ynet_db.images.decode import DEFAULT_LIMITS, ImageError, ImageLimits, decode_image
from ynet_db.images.fetch import NOT_REGULAR_HINT, fetch_image_bytes
from ynet_db.images.policy import FetchPolicy

# The test servers listen on loopback, which the fetch policy refuses unless the settings allow it.
LOOPBACK = FetchPolicy.from_settings(Settings(allowed_hosts=("127.0.0.1",)))


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def halves(size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def error_of(data: bytes, source: str = "shop/42.jpg", limits: ImageLimits = DEFAULT_LIMITS) -> ImageError:
    with pytest.raises(ImageError) as caught:
        decode_image(data, source=source, limits=limits)
    assert caught.value.source == source
    return caught.value


def test_a_plain_jpeg_decodes_to_rgb() -> None:
    image = decode_image(encode(Image.new("RGB", (30, 20), (0, 128, 255)), "JPEG", quality=95), source="a.jpg")
    assert (image.mode, image.size) == ("RGB", (30, 20))
    assert np.abs(np.asarray(image, np.int16) - (0, 128, 255)).max() <= 3


def test_empty() -> None:
    error = error_of(b"")
    assert str(error) == "image shop/42.jpg: is empty (0 bytes); re-upload or re-download it"
    assert error.reason == "is empty (0 bytes)"


def test_not_an_image() -> None:
    assert str(error_of(b"<html>not found</html>")).startswith(
        "image shop/42.jpg: is not an image in a supported format; accepted formats: JPEG, PNG, WEBP, GIF, BMP, TIFF"
    )


def test_a_format_outside_the_safe_list_is_refused_before_parsing() -> None:
    assert "is not an image in a supported format" in str(error_of(encode(Image.new("RGB", (20, 20)), "PPM")))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    message = str(error_of(data[: len(data) // 2]))
    assert message.startswith("image shop/42.jpg: cannot be decoded (")
    assert message.endswith("; the file is truncated or corrupt")


def test_too_small() -> None:
    assert (
        str(error_of(encode(Image.new("RGB", (4, 30)))))
        == "image shop/42.jpg: is 4x30 pixels, smaller than 8 on a side"
    )


def test_too_many_bytes() -> None:
    data = encode(Image.new("RGB", (20, 20)))
    error = error_of(data, limits=ImageLimits(max_bytes=50))
    assert str(error) == f"image shop/42.jpg: has {len(data)} bytes, over the limit of 50"


def test_too_many_pixels() -> None:
    error = error_of(encode(Image.new("RGB", (40, 30))), limits=ImageLimits(max_pixels=1000))
    assert error.reason == "is 40x30 = 1200 pixels, over the limit of 1000"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header promises width x height pixels, followed by a scrap of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    # 50 MP passes Pillow's own warning threshold; the data behind the header would fail to decode,
    # so this message proves the check ran before decoding.
    error = error_of(png_header_only(10_000, 5_000))
    assert str(error) == (
        "image shop/42.jpg: is 10000x5000 = 50000000 pixels, over the limit of 40000000; "
        "a decompression bomb, or a photo to downscale before upload"
    )


def test_a_bomb_beyond_pillows_own_limit_is_named_too() -> None:
    assert error_of(png_header_only(50_000, 50_000)).reason.startswith("is a decompression bomb")


def test_cmyk_converts_to_the_right_colour() -> None:
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    image = decode_image(encode(cyan, "JPEG", quality=100), source="c.jpg")
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image, np.int16) - (0, 255, 255)).max() <= 3


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 64, 257 * 128, 65535]] * 8, dtype=np.uint16).repeat(4, axis=1)
    image = decode_image(encode(Image.fromarray(values)), source="deep.png")
    assert image.mode == "RGB"
    assert np.asarray(image)[0, ::4, 0].tolist() == [0, 64, 128, 255]


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 5, 10))
    rgba.paste((0, 0, 255, 128), (5, 0, 10, 10))
    image = decode_image(encode(rgba), source="alpha.png")
    pixels = np.asarray(image)
    assert pixels[0, 0].tolist() == [255, 0, 0]
    assert np.abs(pixels[0, 9].astype(int) - (127, 127, 255)).max() <= 1


def test_palette_transparency_and_greyscale_alpha() -> None:
    palette = Image.new("P", (10, 10), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.info["transparency"] = 1
    assert np.asarray(decode_image(encode(palette, transparency=1), source="p.png"))[0, 0].tolist() == [255, 255, 255]
    grey = Image.new("LA", (10, 10), (0, 255))
    assert np.asarray(decode_image(encode(grey), source="la.png"))[0, 0].tolist() == [0, 0, 0]


def test_exif_orientation_is_applied() -> None:
    stored = halves((40, 20), (255, 0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to display
    image = decode_image(encode(stored, "JPEG", quality=95, exif=exif), source="phone.jpg")
    pixels = np.asarray(image, np.int16)
    assert image.size == (20, 40)
    assert np.abs(pixels[5, 10] - (255, 0, 0)).max() <= 10  # the stored left half is now on top
    assert np.abs(pixels[35, 10] - (0, 0, 255)).max() <= 10


def test_read_image_crops_to_the_clamped_box(tmp_path: Path) -> None:
    path = tmp_path / "street.png"
    halves((40, 20), (255, 0, 0), (0, 0, 255)).save(path)
    image = read_image(ImageRef(path, Box(20, -5, 60, 30)))
    assert image.size == (20, 20)
    assert np.asarray(image)[0, 0].tolist() == [0, 0, 255]


def test_read_image_box_outside_the_image(tmp_path: Path) -> None:
    path = tmp_path / "street.png"
    Image.new("RGB", (40, 20)).save(path)
    with pytest.raises(ImageError) as caught:
        read_image(ImageRef(path, Box(50, 0, 80, 10)))
    assert (
        str(caught.value)
        == f"image {path}: box (50, 0, 80, 10) lies outside the 40x20 image; check the release's bounding-box file"
    )


def test_read_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"missing.jpg: does not exist; check the path"):
        read_image(ImageRef(tmp_path / "missing.jpg"))


def test_read_image_refuses_what_is_not_a_regular_file_without_blocking(tmp_path: Path) -> None:
    """A dataset's images are read through the fetch module's reader: a FIFO (opening it would wait for a
    writer) and a folder named like an image are refused, as a catalogue image would be."""
    os.mkfifo(tmp_path / "street.jpg")
    (tmp_path / "shop.jpg").mkdir()
    for name in ("street.jpg", "shop.jpg"):
        with pytest.raises(ImageError) as caught:
            read_image(ImageRef(tmp_path / name))
        assert str(caught.value) == f"image {tmp_path / name}: is not a regular file; {NOT_REGULAR_HINT}"


def test_read_image_keeps_the_byte_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 20)).save(path)
    assert path.stat().st_size > 50
    with pytest.raises(ImageError, match=r"big.png: is larger than the limit of 50 bytes"):
        read_image(ImageRef(path), ImageLimits(max_bytes=50))


def test_fetch_plain_path_and_file_url(tmp_path: Path) -> None:
    path = tmp_path / "a b.png"
    path.write_bytes(b"abc")
    policy = FetchPolicy(roots=(tmp_path,))
    assert fetch_image_bytes(str(path), policy=policy) == b"abc"
    assert fetch_image_bytes(path.as_uri(), policy=policy) == b"abc"


def test_fetch_refuses_other_schemes_and_remote_file_urls() -> None:
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes("ftp://example.com/a.jpg", policy=FetchPolicy())
    assert (
        str(caught.value)
        == "image ftp://example.com/a.jpg: has unsupported scheme 'ftp'; use a path, file://, http:// or https://"
    )
    with pytest.raises(ImageError, match="file URL names a remote host 'server'"):
        fetch_image_bytes("file://server/share/a.jpg", policy=FetchPolicy())


def test_fetch_a_local_file_over_the_byte_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(b"x" * 100)
    with pytest.raises(ImageError, match="big.jpg: is larger than the limit of 99 bytes"):
        fetch_image_bytes(str(path), policy=FetchPolicy(roots=(tmp_path,)), limits=ImageLimits(max_bytes=99))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path == "/ok.png":
            self._send(200, b"png-bytes")
        elif self.path == "/slow.png":
            time.sleep(1.0)
            self._send(200, b"late")
        elif self.path == "/big.png":
            self._send(200, b"x" * 5000)
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "ftp://example.com/a.jpg")
            self.end_headers()
        else:
            self._send(404, b"nope")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch_error(url: str, **options: object) -> str:
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(url, policy=LOOPBACK, **options)  # type: ignore[arg-type]
    assert caught.value.source == url
    return str(caught.value)


def test_fetch_http(server: str) -> None:
    assert fetch_image_bytes(f"{server}/ok.png", policy=LOOPBACK) == b"png-bytes"


def test_fetch_http_error_status(server: str) -> None:
    assert (
        fetch_error(f"{server}/gone.png")
        == f"image {server}/gone.png: answered HTTP 404 Not Found; check that the URL is public"
    )


def test_fetch_http_timeout(server: str) -> None:
    assert fetch_error(f"{server}/slow.png", timeout_s=0.2) == (
        f"image {server}/slow.png: timed out after 0.2 s; the server is slow or unreachable"
    )


def test_fetch_http_declared_size_over_the_limit(server: str) -> None:
    assert fetch_error(f"{server}/big.png", limits=ImageLimits(max_bytes=1000)) == (
        f"image {server}/big.png: declares 5000 bytes, over the limit of 1000"
    )


def test_fetch_http_refuses_a_redirect_out_of_http(server: str) -> None:
    assert "redirect to a non-HTTP URL 'ftp://example.com/a.jpg' refused" in fetch_error(f"{server}/to-file")


def test_fetch_unreachable_host() -> None:
    assert fetch_error("http://127.0.0.1:9/a.png", timeout_s=2).startswith(
        "image http://127.0.0.1:9/a.png: could not be fetched ("
    )
