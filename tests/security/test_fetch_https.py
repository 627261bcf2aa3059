"""HTTPS to the checked address: the URL's host name still drives SNI and certificate verification."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_servers import Loopback, ScriptedResolver, loopback, png_bytes

from ynet_db.config import Settings
from ynet_db.images.decode import ImageError
from ynet_db.images.fetch import fetch_image_bytes
from ynet_db.images.policy import FetchPolicy


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"]
        + ["-addext", f"subjectAltName=DNS:{name}"],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Loopback, list[str]]]:
    cert, key = self_signed(tmp_path, "shop.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this certificate, by OpenSSL's own setting
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str] = []
    context.sni_callback = lambda _socket, name, _context: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    with loopback() as server:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        yield server, names


def policy_for(*names: str) -> FetchPolicy:
    resolver = ScriptedResolver({name: [["127.0.0.1"]] for name in names})
    return FetchPolicy.from_settings(Settings(allowed_hosts=names), resolver=resolver)


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
    tls_server: tuple[Loopback, list[str]],
) -> None:
    server, names = tls_server
    url = f"https://shop.test:{server.port}/ok.png"
    assert fetch_image_bytes(url, policy=policy_for("shop.test")) == png_bytes()
    assert names == ["shop.test"]


def test_a_trickling_https_server_is_cut_at_the_deadline(tls_server: tuple[Loopback, list[str]]) -> None:
    server, _ = tls_server
    url = f"https://shop.test:{server.port}/trickle"
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(url, policy=policy_for("shop.test"), timeout_s=1)
    assert str(caught.value) == f"image {url}: timed out after 1 s; the server is slow or unreachable"


def test_https_refuses_a_certificate_for_another_name(tls_server: tuple[Loopback, list[str]]) -> None:
    server, names = tls_server
    url = f"https://other.test:{server.port}/ok.png"
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(url, policy=policy_for("other.test"))
    assert "certificate verify failed" in str(caught.value)
    assert names == ["other.test"] and server.hits["/ok.png"] == 0
