"""What an image location may look like: a path, a file:// URL or an http(s):// URL, checked once.

Catalogue import and the fetcher share `validate_image_uri`, so a location the import accepts is one
the fetcher can use, and a malformed one (`http://[::1/x.jpg`, a bad port, a space in the host, an
over-long label) is rejected at import with its line number instead of escaping a worker's task as a
`ValueError`, `http.client.InvalidURL` or `UnicodeError`.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, quote, urlsplit

from ynet_db.config import HOST_NAME
from ynet_db.images.decode import ImageError

MAX_URI_LENGTH = 4096
DEFAULT_PORTS = {"http": 80, "https": 443}

# http.client refuses these in a request line; a path with a NUL cannot be opened.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_SPACE = re.compile(r"\s")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True)
class ImageUri:
    """A checked location. Local files have `path`; URLs have `host` (IDNA, lower case, IPv6 without
    brackets), `port` and `target` (path and query, as the request line carries them)."""

    location: str
    scheme: str
    """'file' for plain paths and file:// URLs, else 'http' or 'https'."""
    path: Path | None = None
    host: str = ""
    port: int = 0
    target: str = "/"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"


def validate_image_uri(location: str) -> ImageUri:
    """Parse `location` or raise an `ImageError` that says what is wrong with it."""
    if not location:
        raise ImageError(location, "is empty", "give a path, file://, http:// or https:// location")
    if len(location) > MAX_URI_LENGTH:
        raise ImageError(location[:80] + "...", f"is longer than {MAX_URI_LENGTH} characters")
    if _UNSAFE.search(location):
        raise ImageError(location, "contains a control character")
    parts = _split(location)
    scheme = parts.scheme.lower()
    if scheme == "" or (scheme not in ("file", *DEFAULT_PORTS) and "://" not in location):
        return ImageUri(location, "file", path=Path(location))  # a path, also one like 'look:red.jpg'
    if scheme == "file":
        return _file_uri(location, parts)
    if scheme in DEFAULT_PORTS:
        return _http_uri(location, parts, scheme)
    raise ImageError(location, f"has unsupported scheme {scheme!r}", "use a path, file://, http:// or https://")


def _split(location: str) -> SplitResult:
    try:
        return urlsplit(location)
    except ValueError as error:  # e.g. an unclosed '[' of an IPv6 host
        raise ImageError(location, f"is not a valid URL ({error})") from None


def _file_uri(location: str, parts: SplitResult) -> ImageUri:
    if parts.netloc not in ("", "localhost"):
        raise ImageError(location, f"file URL names a remote host {parts.netloc!r}", "use a local path")
    return ImageUri(location, "file", path=Path(urllib.request.url2pathname(parts.path)))


def _http_uri(location: str, parts: SplitResult, scheme: str) -> ImageUri:
    if _SPACE.search(location):
        raise ImageError(location, "is not a valid URL (it contains a space)", "percent-encode it as %20")
    if "@" in parts.netloc:
        raise ImageError(location, "is not a valid URL (it carries a user name or password)")
    try:
        port = parts.port
    except ValueError as error:  # not a number, or out of range
        raise ImageError(location, f"is not a valid URL (bad port: {error})") from None
    host = _host(location, parts)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = _NON_ASCII.sub(lambda match: quote(match.group()), target)  # a request line is ASCII
    return ImageUri(location, scheme, host=host, port=port or DEFAULT_PORTS[scheme], target=target)


def _host(location: str, parts: SplitResult) -> str:
    host = parts.hostname or ""
    if not host:
        raise ImageError(location, "is not a valid URL (it has no host)")
    if parts.netloc.startswith("["):
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ImageError(location, f"is not a valid URL (bad IPv6 address {host!r})") from None
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError as error:  # an empty or over-long label, a character IDNA forbids
        raise ImageError(location, f"is not a valid URL (bad host name: {error})") from None
    if not HOST_NAME.match(ascii_host):
        raise ImageError(location, f"is not a valid URL (bad host name {host!r})")
    return ascii_host.rstrip(".")
