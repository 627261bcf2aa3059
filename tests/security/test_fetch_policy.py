"""The fetch policy on its own: addresses, settings, URL validation, and local files under roots."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from ynet_db.config import Settings, SettingsError
from ynet_db.images.decode import ImageError
from ynet_db.images.fetch import fetch_image_bytes
from ynet_db.images.policy import REFUSED_ADDRESS, REFUSED_FILE, FetchPolicy, FetchRefused, is_public
from ynet_db.images.uri import validate_image_uri

# -- addresses ------------------------------------------------------------------------------------------

REFUSED_ADDRESSES = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    with pytest.raises(FetchRefused) as caught:
        FetchPolicy().check_addresses("shop.example", [address], "http://shop.example/a.jpg")
    assert str(caught.value) == f"image http://shop.example/a.jpg: {REFUSED_ADDRESS}"


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert FetchPolicy().check_addresses("shop.example", [address], "x") == [address]


def test_one_refused_address_in_an_answer_refuses_the_name() -> None:
    with pytest.raises(FetchRefused):
        FetchPolicy().check_addresses("shop.example", ["8.8.8.8", "127.0.0.1"], "x")


def test_allowed_hosts_open_names_addresses_and_ranges() -> None:
    policy = FetchPolicy.from_settings(Settings(allowed_hosts=("cdn.internal", "10.0.0.0/8", "::1")))
    assert policy.address_allowed("cdn.internal", "192.168.7.7")  # an allowed name may resolve anywhere
    assert policy.address_allowed("other", "10.200.0.1")
    assert policy.address_allowed("other", "::ffff:10.200.0.1")  # the mapped form of an allowed address
    assert policy.address_allowed("other", "::1")
    assert not policy.address_allowed("other", "127.0.0.1")
    assert not policy.address_allowed("other", "192.168.7.7")


# -- settings --------------------------------------------------------------------------------------------


def test_settings_read_roots_and_allowed_hosts(tmp_path: Path) -> None:
    env = {
        "YNET_IMAGE_ROOTS": os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]),
        "YNET_ALLOWED_HOSTS": " CDN.Internal , 10.0.0.0/8,::1 ",
    }
    settings = Settings.from_env(env)
    assert settings.image_roots == (tmp_path / "a", tmp_path / "b")
    assert settings.allowed_hosts == ("cdn.internal", "10.0.0.0/8", "::1")
    assert Settings.from_env({}).image_roots == () and Settings.from_env({}).allowed_hosts == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"YNET_IMAGE_ROOTS": "images"}, "YNET_IMAGE_ROOTS: 'images' is not an absolute path"),
        (
            {"YNET_ALLOWED_HOSTS": "10.0.0.0/33"},
            "YNET_ALLOWED_HOSTS: '10.0.0.0/33' is not a host name, an IP address or a CIDR range (e.g. 10.0.0.0/8)",
        ),
        (
            {"YNET_ALLOWED_HOSTS": "http://cdn"},
            "YNET_ALLOWED_HOSTS: 'http://cdn' is not a host name, an IP address or a CIDR range (e.g. 10.0.0.0/8)",
        ),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


# -- URLs -------------------------------------------------------------------------------------------------

MALFORMED = [
    ("http://[::1/x.jpg", "is not a valid URL (Invalid IPv6 URL)"),
    ("http://shop.example:99999/x.jpg", "is not a valid URL (bad port: Port out of range 0-65535)"),
    ("http://shop.example:8o/x.jpg", "is not a valid URL (bad port: Port could not be cast to integer value as '8o')"),
    ("http://shop example/x.jpg", "is not a valid URL (it contains a space); percent-encode it as %20"),
    (
        "http://" + "a" * 64 + ".example/x.jpg",
        "is not a valid URL (bad host name: encoding with 'idna' codec failed (UnicodeError: label empty or too long))",
    ),
    ("http:///x.jpg", "is not a valid URL (it has no host)"),
    ("http://user:pw@shop.example/x.jpg", "is not a valid URL (it carries a user name or password)"),
    ("http://shop.example/x\n.jpg", "contains a control character"),
    ("gopher://shop.example/x.jpg", "has unsupported scheme 'gopher'; use a path, file://, http:// or https://"),
]


@pytest.mark.parametrize(("location", "reason"), MALFORMED)
def test_malformed_urls_are_one_clear_image_error(location: str, reason: str) -> None:
    with pytest.raises(ImageError) as caught:
        validate_image_uri(location)
    assert str(caught.value) == f"image {location}: {reason}"
    with pytest.raises(ImageError):  # never ValueError, InvalidURL or UnicodeError out of the fetcher
        fetch_image_bytes(location, policy=FetchPolicy(), timeout_s=1)


def test_url_forms_that_are_accepted() -> None:
    assert validate_image_uri("HTTPS://Shop.Example:8443/a b%20.jpg?x=1#top".replace(" ", "%20")).host == "shop.example"
    assert validate_image_uri("http://[::1]:8080/x").host == "::1"
    assert validate_image_uri("FILE:///images/a.jpg").path == Path("/images/a.jpg")
    assert validate_image_uri("http://bücher.example/ä.jpg").target == "/%C3%A4.jpg"


# -- local files -----------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"image bytes")
    return folder


def refusal(location: str, policy: FetchPolicy) -> str:
    with pytest.raises(FetchRefused) as caught:
        fetch_image_bytes(location, policy=policy)
    return caught.value.reason


def test_local_files_are_read_only_under_the_roots(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = FetchPolicy(roots=(root,))
    assert fetch_image_bytes(str(root / "a.png"), policy=policy) == b"image bytes"
    assert fetch_image_bytes((root / "a.png").as_uri().replace("file:", "FILE:"), policy=policy) == b"image bytes"
    (tmp_path / "outside.png").write_bytes(b"not yours")
    (root / "escape.png").symlink_to(tmp_path / "outside.png")
    (root / "etc").symlink_to("/etc")
    monkeypatch.chdir(root)
    outside = [
        "/etc/shadow",
        "/etc/hostname",
        "file:///etc/shadow",
        "/proc/self/environ",
        "../../../../../../etc/hostname",  # relative to the working directory, which lies under the root
        str(root / ".." / "outside.png"),
        str(root / "escape.png"),  # a symlink out of the root
        str(root / "etc" / "hostname"),
        str(tmp_path / "no-such-file.png"),
        "/no/such/file.png",
    ]
    assert {refusal(location, policy) for location in outside} == {REFUSED_FILE}


def test_a_file_name_with_a_colon_is_a_path(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "look:red.png").write_bytes(b"colon")
    monkeypatch.chdir(root)
    assert fetch_image_bytes("look:red.png", policy=FetchPolicy(roots=(root,))) == b"colon"


def test_no_root_no_local_file(root: Path) -> None:
    assert refusal(str(root / "a.png"), FetchPolicy()) == REFUSED_FILE


def test_only_regular_files_are_read_and_a_fifo_never_blocks(root: Path) -> None:
    os.mkfifo(root / "pipe.png")  # nobody writes: a blocking open or read would hang the test
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "socket.png"))
    (root / "folder.png").mkdir()
    policy = FetchPolicy(roots=(root,))
    for name in ("pipe.png", "folder.png", "socket.png"):
        with pytest.raises(ImageError) as caught:
            fetch_image_bytes(str(root / name), policy=policy)
        assert caught.value.reason == "is not a regular file"
    listener.close()
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes("/dev/zero", policy=FetchPolicy(roots=(Path("/dev"),)))
    assert caught.value.reason == "is not a regular file"


def test_a_missing_file_under_a_root_says_so(root: Path) -> None:
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(str(root / "gone.png"), policy=FetchPolicy(roots=(root,)))
    assert str(caught.value) == f"image {root / 'gone.png'}: does not exist; check the path"
